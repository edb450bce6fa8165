package venv

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"go.uber.org/zap"
)

// The batch log of a build under --durability files (DESIGN.md §5.4).
//
// A builder killed during the fill leaves a staging directory most of
// whose files may be there; the next builder used to confirm each
// directory by reading it and the store directories it links from (on the
// MooseFS rig 4.7 s for a 3,518-file tree with 3,316 files present, most
// of a kill interval, against 6.6 s to make them all). Under
// --durability files every file is fsynced as it is made, so a batch
// whose worker returned is whole and durable but for its directory's
// entry. So each worker appends a line to batchLogName once its batch is
// done, and a builder that takes the directory over skips every batch the
// log lists, with the same plan (a generation's plan is a function of its
// id). It then syncs every directory of the plan, as the builder that
// finds filledName does.
//
// A line is "<files>\t<copied>\t<sum>\t<first file>\n", the batch's size,
// how many of its links became copies, a digest of all its destinations
// (batchSum) and its first destination, which names the batch. The digest
// is there because batches are not quite deterministic: two packages may
// ship the same bytes at one path, and which claims it depends on the
// order their entries arrived (plan), so a batch of the same name may
// hold other paths in the next builder's plan. A line cut short by a kill, or
// holed, does not parse or does not match a batch of the plan, and that
// batch is made again, as any batch is when the log is lost: the log only
// ever saves work. It is removed before the marker is written.

// batchLogName is the batch log's name at the top of a staging directory.
const batchLogName = ".volboot-batches"

// batchLog appends done batches to the log of one build.
type batchLog struct {
	mu  sync.Mutex
	f   *os.File
	log *zap.Logger
}

// openBatchLog opens (creating) the batch log of the staging directory
// tmp for appending; nil when it cannot, which costs only checks later.
func openBatchLog(tmp string, log *zap.Logger) *batchLog {
	f, err := os.OpenFile(filepath.Join(tmp, batchLogName), os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		log.Debug("no batch log for this build", zap.String("dir", tmp), zap.Error(err))
		return nil
	}
	// A killed builder's last line may be cut short: end it, so that the
	// next line is not read as its tail.
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, st.Size()-1); err != nil || last[0] != '\n' {
			f.WriteString("\n")
		}
	}
	return &batchLog{f: f, log: log}
}

// done records a finished batch. Safe for concurrent use; nil-safe.
func (l *batchLog) done(batch []*op, copied int) {
	if l == nil {
		return
	}
	line := l.line(batch, copied)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.WriteString(line); err != nil {
		l.log.Debug("could not log a finished batch", zap.Error(err))
	}
}

// line is the log's line for batch.
func (*batchLog) line(batch []*op, copied int) string {
	return fmt.Sprintf("%d\t%d\t%016x\t%s\n", len(batch), copied, batchSum(batch), batch[0].dst)
}

// close closes the log; nil-safe.
func (l *batchLog) close() {
	if l != nil {
		l.f.Close()
	}
}

// loggedBatch is a batch the log says was finished.
type loggedBatch struct {
	files, copied int
	sum           uint64 // batchSum
}

// batchSum digests a batch's destinations, in order.
func batchSum(batch []*op) uint64 {
	h := fnv.New64a()
	for _, o := range batch {
		h.Write([]byte(o.dst))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// matches says whether the logged batch is batch.
func (lb loggedBatch) matches(batch []*op) bool {
	return lb.files == len(batch) && lb.sum == batchSum(batch)
}

// readBatchLog reads the batch log of the staging directory tmp, by the
// batches' first destinations; lines that do not parse are left out.
func readBatchLog(tmp string) map[string]loggedBatch {
	data, err := os.ReadFile(filepath.Join(tmp, batchLogName))
	if err != nil {
		return nil
	}
	return parseBatchLog(data)
}

// parseBatchLog parses the lines of a batch log (see the top of this file).
// What follows the last newline was cut short by a kill and is left out.
func parseBatchLog(data []byte) map[string]loggedBatch {
	out := map[string]loggedBatch{}
	lines := bytes.Split(data, []byte{'\n'})
	for _, line := range lines[:len(lines)-1] {
		fields := bytes.SplitN(line, []byte{'\t'}, 4)
		if len(fields) != 4 || len(fields[3]) == 0 || bytes.IndexByte(fields[3], 0) >= 0 || len(fields[2]) != 16 {
			continue
		}
		files, err1 := strconv.Atoi(string(fields[0]))
		copied, err2 := strconv.Atoi(string(fields[1]))
		sum, err3 := strconv.ParseUint(string(fields[2]), 16, 64)
		if err1 != nil || err2 != nil || err3 != nil || files < 1 || copied < 0 || copied > files {
			continue
		}
		out[string(fields[3])] = loggedBatch{files: files, copied: copied, sum: sum}
	}
	return out
}
