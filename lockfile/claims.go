package lockfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// claimsKept is how many of the newest claim files survive cleanup. The
// newest must never be removed (it is how a slow claimer of a removed name
// learns that it is behind); a few more help people reading the history.
const claimsKept = 3

// claimDir manages claims/<epoch>: one exclusively created file per epoch.
type claimDir struct {
	dir string
}

func (c claimDir) path(epoch uint64) string {
	return filepath.Join(c.dir, strconv.FormatUint(epoch, 10))
}

// epochs lists the claimed epochs, ascending. A missing directory is no
// epochs. Names that are not plain decimal numbers (temporary files) are
// ignored.
func (c claimDir) epochs() ([]uint64, error) {
	ents, err := os.ReadDir(c.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list lock claims in %s: %w", c.dir, err)
	}
	var out []uint64
	for _, e := range ents {
		n, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil || n == 0 || strconv.FormatUint(n, 10) != e.Name() {
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// current returns the highest claimed epoch, 0 when none.
func (c claimDir) current() (uint64, error) {
	es, err := c.epochs()
	if err != nil || len(es) == 0 {
		return 0, err
	}
	return es[len(es)-1], nil
}

// create tries to claim epoch with content. It reports won=false, err=nil
// when another process created the name first.
//
// The content is written and synced under a temporary name and then hard
// linked to the final name: link(2) fails with EEXIST when the name exists,
// and the name appears with complete content (DESIGN.md rule 1). When the
// link reports EEXIST but the name is our own inode, a retransmitted NFS
// request already succeeded: we won. Filesystems without hard links get
// open(O_CREAT|O_EXCL) and a write; readers treat an unparseable claim as
// "record pending".
func (c claimDir) create(epoch uint64, content []byte) (won bool, err error) {
	final := c.path(epoch)
	tmp := atomicfile.TempName(final)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return false, fmt.Errorf("create lock claim: %w", err)
	}
	defer os.Remove(tmp)
	_, werr := f.Write(content)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return false, fmt.Errorf("write lock claim %s: %w", tmp, werr)
	}
	lerr := os.Link(tmp, final)
	switch {
	case lerr == nil:
	case errors.Is(lerr, fs.ErrExist):
		a, err1 := os.Stat(tmp)
		b, err2 := os.Stat(final)
		if err1 != nil || err2 != nil || !os.SameFile(a, b) {
			return false, nil
		}
	case errors.Is(lerr, syscall.EPERM), errors.Is(lerr, syscall.ENOTSUP),
		errors.Is(lerr, syscall.EMLINK), errors.Is(lerr, syscall.ENOSYS):
		return c.createExcl(final, content)
	default:
		return false, fmt.Errorf("claim lock epoch %d: %w", epoch, lerr)
	}
	// The claim is ours whether or not the directory fsync succeeds; if it
	// did not and the host crashes, the claim may vanish with its dead
	// holder, which the next claimer's post-claim check tolerates.
	_ = atomicfile.SyncDir(c.dir)
	return true, nil
}

func (c claimDir) createExcl(final string, content []byte) (bool, error) {
	f, err := os.OpenFile(final, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim lock: %w", err)
	}
	_, werr := f.Write(content)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		// The name is ours whatever its content: readers treat an
		// unreadable claim as "record pending".
		return true, fmt.Errorf("write lock claim %s: %w", final, werr)
	}
	_ = atomicfile.SyncDir(c.dir)
	return true, nil
}

// cleanup removes claims older than the newest claimsKept and temporary
// files that a crashed claimer left more than maxAge before ref (a file
// time from this same filesystem, so both stamps come from one clock).
// Failures are logged, never fatal.
func (c claimDir) cleanup(log *zap.Logger, ref time.Time, maxAge time.Duration) {
	es, err := c.epochs()
	if err != nil {
		log.Debug("lock claim cleanup skipped", zap.Error(err))
		return
	}
	for i := 0; i+claimsKept < len(es); i++ {
		if err := os.Remove(c.path(es[i])); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Debug("remove old lock claim", zap.Error(err))
			return
		}
	}
	removeStaleTemps(log, c.dir, "", ref, maxAge)
}

// removeStaleTemps removes atomicfile temporary files in dir (for the final
// base name final, or any when final is "") whose mtime is older than ref by
// more than maxAge.
func removeStaleTemps(log *zap.Logger, dir, final string, ref time.Time, maxAge time.Duration) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		ti, ok := atomicfile.ParseTempName(e.Name())
		if !ok || (final != "" && ti.Final != final) {
			continue
		}
		info, err := e.Info()
		if err != nil || ref.Sub(info.ModTime()) <= maxAge {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err == nil {
			log.Debug("removed stale temporary file", zap.String("path", p))
		}
	}
}
