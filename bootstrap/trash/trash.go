// Package trash takes the removal of trees off the boot path.
//
// On a network volume every unlink is a round trip to the metadata server,
// so removing a tree of tens of thousands of files (a generation a killed
// worker left half built, a store entry gc dooms) takes minutes. A boot
// must not spend them: it moves the tree into the volume's trash directory
// with one rename (Put), and the files are removed later by Empty, which
// `volboot run` calls in the background once the handler is ready, and
// which gc calls too.
//
// Contract:
//
//   - Nothing in the trash is ever read as content: an item there may be
//     half removed. Readers never look inside it.
//   - Put renames; the tree and the trash must be on one filesystem. A Put
//     that fails leaves the tree where it was and says so.
//   - Empty first claims an item by renaming it to a name that carries its
//     own identity and the time (atomicfile.TempName with final name
//     "removing-<unix seconds>"), so that the many workers of a fleet,
//     which all become ready at about the same time, do not all walk the
//     same tree. An item claimed by a process that is gone (this host, pid
//     gone) or claimed longer than ClaimTTL ago (another host: its liveness
//     cannot be seen from here) is claimed again. A killed Empty leaves a claimed, half-removed item that
//     the next Empty takes over; two emptiers on one tree only waste round
//     trips, since every removal tolerates a name that is already gone.
//   - Empty runs its file operations through a fileops.Scheduler (Ops),
//     spread across directories (the kernel serializes unlinks within one
//     directory, so only different directories run in parallel), and
//     returns as soon as ctx ends, leaving the rest for the next one.
package trash

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fileops"
)

// claimName starts the final name in the temporary names of claimed items;
// the claim's time (Unix seconds) follows.
const claimName = "removing-"

// DefaultClaimTTL is how long another host's claim on an item is honoured.
const DefaultClaimTTL = 10 * time.Minute

// Can is one volume's trash directory. The zero value is not usable: Dir is
// required. A Can is safe for concurrent use.
type Can struct {
	Dir    string // <volume>/.volboot/trash
	Logger *zap.Logger
	// Ops schedules Empty's file operations; default 16 in flight (fewer
	// on a local disk), one per directory.
	Ops *fileops.Scheduler
	// ClaimTTL: see the package comment; default DefaultClaimTTL.
	ClaimTTL time.Duration
	// Now is the clock claims are judged by; default time.Now.
	Now func() time.Time
}

func (c *Can) logger() *zap.Logger {
	if c.Logger == nil {
		return zap.NewNop()
	}
	return c.Logger
}

// Put moves the file or tree at path into the trash with one rename. A path
// that does not exist is not an error.
func (c *Can) Put(path string) error {
	base := filepath.Base(path)
	if _, ok := atomicfile.ParseTempName(base); !ok {
		// Only temporary names are unique; anything else gets one.
		base = filepath.Base(atomicfile.TempName(path))
	}
	dst := filepath.Join(c.Dir, base)
	err := os.Rename(path, dst)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Lstat(path); errors.Is(serr, fs.ErrNotExist) {
			return nil
		}
		// The trash itself is missing: make it once and try again.
		if merr := os.Mkdir(c.Dir, 0o755); merr != nil && !errors.Is(merr, fs.ErrExist) {
			return fmt.Errorf("create the trash %s: %w", c.Dir, merr)
		}
		err = os.Rename(path, dst)
	}
	if err != nil {
		return fmt.Errorf("move %s into the trash %s: %w", path, c.Dir, err)
	}
	return nil
}

// Discard puts path in the trash when c is set, and removes it at once
// otherwise (code used outside a volume, as in tests and benchmarks). A
// failed Put falls back to removing at once: the tree must not stay where
// it was.
func (c *Can) Discard(path string) {
	if c != nil {
		err := c.Put(path)
		if err == nil {
			return
		}
		c.logger().Warn("could not move a tree into the trash; removing it now", zap.String("path", path), zap.Error(err))
	}
	// Set aside first: a removal killed halfway leaves a temporary name,
	// never a half-emptied tree under the name it had.
	atomicfile.RemoveTree(path)
}

// Report says what one Empty did.
type Report struct {
	Items   int `json:"items"`   // items removed completely
	Removed int `json:"removed"` // files and directories removed
	Left    int `json:"left"`    // items left for another time (claimed by others, or ctx ended)
}

// Empty removes what is in the trash (see the package comment).
func (c *Can) Empty(ctx context.Context) (Report, error) {
	var r Report
	ents, err := os.ReadDir(c.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("read the trash %s: %w", c.Dir, err)
	}
	ops := c.Ops
	if ops == nil {
		// Emptying runs beside the handler's warm load: fewer in flight
		// than an install's own bulk work, so its imports keep their
		// share of the volume's metadata server.
		ops = fileops.New(min(16, fileops.DefaultJobs(c.Dir)), 1)
	}
	var removed int64
	for _, e := range ents {
		if ctx.Err() != nil {
			r.Left++
			continue
		}
		p, ok := c.claim(e)
		if !ok {
			r.Left++
			continue
		}
		rm := &remover{g: ops.Group(ctx)}
		err := rm.remove(p, e.IsDir())
		removed += rm.removed.Load()
		if err != nil {
			r.Left++
			if ctx.Err() == nil {
				c.logger().Warn("trash: could not remove an item; the next emptying tries again", zap.String("path", p), zap.Error(err))
			}
			continue
		}
		r.Items++
	}
	r.Removed = int(removed)
	return r, ctx.Err()
}

// Items counts what is in the trash (for status).
func (c *Can) Items() int {
	ents, _ := os.ReadDir(c.Dir)
	return len(ents)
}

// claim renames the item e to a claim of this process and returns its new
// path; false when another live emptier holds it or it is gone.
func (c *Can) claim(e fs.DirEntry) (string, bool) {
	p := filepath.Join(c.Dir, e.Name())
	if ti, ok := atomicfile.ParseTempName(e.Name()); ok && strings.HasPrefix(ti.Final, claimName) {
		host, _ := os.Hostname()
		switch {
		case atomicfile.Mine(ti):
			return "", false // another goroutine of ours
		case ti.Host == atomicfile.HostToken(host) && ti.PID != os.Getpid():
			if err := syscall.Kill(ti.PID, 0); !errors.Is(err, syscall.ESRCH) {
				return "", false
			}
		case ti.Host != atomicfile.HostToken(host):
			if !c.claimExpired(ti.Final) {
				return "", false
			}
		}
		// Else: this host's earlier process with our pid (a restarted
		// container's pid 1), gone.
	}
	mine := atomicfile.TempName(filepath.Join(c.Dir, claimName+strconv.FormatInt(c.now().Unix(), 10)))
	if err := os.Rename(p, mine); err != nil {
		return "", false // taken by another emptier, most likely
	}
	return mine, true
}

func (c *Can) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// claimExpired judges another host's claim by the time its name carries,
// against this host's clock: a skew between hosts only moves the moment
// two emptiers may share an item. (Not by ctime: whether a rename sets it
// is up to the filesystem.)
func (c *Can) claimExpired(final string) bool {
	secs, err := strconv.ParseInt(strings.TrimPrefix(final, claimName), 10, 64)
	if err != nil {
		return true // not a claim this package wrote
	}
	ttl := c.ClaimTTL
	if ttl <= 0 {
		ttl = DefaultClaimTTL
	}
	return c.now().Sub(time.Unix(secs, 0)) > ttl
}

// remover removes trees through a fileops group: a directory is read by
// one operation, its files unlinked in batches (each batch one operation
// keyed by that directory, through one handle on it), its subdirectories
// removed the same way, each under its own key, and the directory itself
// removed (keyed by its parent) once everything in it is gone. Directories
// thus proceed in parallel up to the scheduler's bound, and one directory
// never has more unlinks in flight than its key allows (the kernel
// serializes them there anyway).
type remover struct {
	g       *fileops.Group
	removed atomic.Int64
}

// unlinkBatch is how many names one operation unlinks: enough to amortize
// the handle on the directory, few enough that a cancellation or another
// directory's turn comes soon.
const unlinkBatch = 32

func (r *remover) remove(p string, isDir bool) error {
	if !isDir {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		r.removed.Add(1)
		return nil
	}
	r.dir(p, func() {})
	return r.g.Wait()
}

// dir queues the removal of directory p and calls gone (from inside an
// operation of the group) once p is removed. After a failure the group
// stops, and gone may never be called.
func (r *remover) dir(p string, gone func()) {
	r.g.Go(p, func() error {
		ents, err := os.ReadDir(p)
		if errors.Is(err, fs.ErrNotExist) {
			gone()
			return nil
		}
		if err != nil {
			return err
		}
		var files, dirs []string
		for _, e := range ents {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(p, e.Name()))
			} else {
				files = append(files, e.Name())
			}
		}
		var left atomic.Int64
		left.Store(int64(len(dirs) + (len(files)+unlinkBatch-1)/unlinkBatch))
		rmdir := func() {
			r.g.Go(filepath.Dir(p), func() error {
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				r.removed.Add(1)
				gone()
				return nil
			})
		}
		if left.Load() == 0 {
			rmdir()
			return nil
		}
		done := func() {
			if left.Add(-1) == 0 {
				rmdir()
			}
		}
		for start := 0; start < len(files); start += unlinkBatch {
			batch := files[start:min(start+unlinkBatch, len(files))]
			r.g.Go(p, func() error {
				if err := r.unlinkAll(p, batch); err != nil {
					return err
				}
				done()
				return nil
			})
		}
		for _, sub := range dirs {
			r.dir(sub, done)
		}
		return nil
	})
}

// unlinkAll removes the files names of directory p through one handle on
// it, so the path is walked once per batch.
func (r *remover) unlinkAll(p string, names []string) error {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	defer unix.Close(fd)
	for _, name := range names {
		if err := r.g.Context().Err(); err != nil {
			return err
		}
		if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove %s: %w", filepath.Join(p, name), err)
		}
		r.removed.Add(1)
	}
	return nil
}
