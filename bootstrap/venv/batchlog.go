package venv

import (
	"bytes"
	"fmt"
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
// A line is "<files>\t<copied>\t<first file>\n", the batch's size, how many
// of its links became copies, and its first destination, which names the
// batch (batches are deterministic). A line cut short by a kill, or
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
	line := fmt.Sprintf("%d\t%d\t%s\n", len(batch), copied, batch[0].dst)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.WriteString(line); err != nil {
		l.log.Debug("could not log a finished batch", zap.Error(err))
	}
}

// close closes the log; nil-safe.
func (l *batchLog) close() {
	if l != nil {
		l.f.Close()
	}
}

// loggedBatch is a batch the log says was finished.
type loggedBatch struct{ files, copied int }

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
		fields := bytes.SplitN(line, []byte{'\t'}, 3)
		if len(fields) != 3 || len(fields[2]) == 0 || bytes.IndexByte(fields[2], 0) >= 0 {
			continue
		}
		files, err1 := strconv.Atoi(string(fields[0]))
		copied, err2 := strconv.Atoi(string(fields[1]))
		if err1 != nil || err2 != nil || files < 1 || copied < 0 || copied > files {
			continue
		}
		out[string(fields[2])] = loggedBatch{files: files, copied: copied}
	}
	return out
}
