package locallayout

// The in-use rule (DESIGN.md §5.8, "Trees in use").
//
// Several processes of one container may run from one local tree (two
// workers, or one worker's handler restarted), and a tree must not leave
// its name while one does: Python finds every module it has not imported
// yet by path, and an extension's libraries through the tree's links. So:
//
//  1. A process that runs from a tree holds a shared flock on the tree's
//     root directory (a Lease) from before it decides to use the tree until
//     it stops. Materialize takes it on a tree in place before it reads the
//     marker, and on a tree it made itself before it publishes it.
//  2. A Lease counts only once its holder has seen that the directory it
//     locked is still the one at the tree's name (hold starts over if the
//     tree was retired between its open and its lock).
//  3. Nothing moves a tree away from its name except retire, which does so
//     with one rename into the local trash while it holds an exclusive
//     flock on that tree's directory, taken without waiting. A tree is
//     removed only from the trash.
//  4. Publishing never replaces what is at a name (RENAME_NOREPLACE).
//
// Why this is safe. flock belongs to the directory's inode, not its name,
// so it follows a tree that is renamed. Say U runs from tree T and R
// retires T. R renamed T while it held LOCK_EX on T, so at that instant
// nobody held LOCK_SH on T. U holds LOCK_SH on T from before it saw T at
// its name (rule 2) until it stops; so U saw T at its name after R renamed
// it away, which no one but a publisher could undo, and a publisher puts a
// new directory there (a different inode), never T. Contradiction: while U
// runs, T stays at its name. A tree its maker locked before publishing is
// covered from its first moment at the name. A killed process drops its
// locks with its descriptors: a killed user frees its tree; a killed
// retirer either renamed T (T is in the trash, whole or half removed, and
// nothing reads the trash as a tree) or did not (T is at its name, whole).
//
// Why the directory and not a lease file: every tree has its root
// directory, a tree without a marker too, so one rule covers every thing
// that can be at a tree's name; and no file is written to take it.
//
// Why no waiting: a retirer that finds a tree in use leaves it (gc tries
// again on a later pass; a worker that cannot reuse the tree runs from the
// volume) instead of waiting for a handler that may run for days. It does
// retry for a moment (busyWait): a process deciding whether to reuse a
// tree holds LOCK_SH for the few microseconds of its marker check, and two
// workers replacing one stale tree each hold it until they try to retire.
//
// The rule binds volboot processes only: a tree removed by hand, or by a
// volboot too old to hold leases, is not protected.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrInUse: another process holds a Lease on the tree.
var ErrInUse = errors.New("another process of this container runs from it")

// errMoved: the tree judged was no longer at its name when its lock was
// taken; the caller looks again.
var errMoved = errors.New("the tree left its name meanwhile")

// busyWait is how long hold and retire retry a lock another process holds
// before giving up (see the package comment on the in-use rule).
const busyWait = 200 * time.Millisecond

// lockWait is how long hold waits for an exclusive holder (a retirer,
// which holds it for one rename) before it fails.
const lockWait = 5 * time.Second

// Lease is a shared flock on a local tree's root directory: while any
// process holds one, no volboot process moves the tree from its name or
// removes it. It lasts until Close, or until every descriptor sharing it
// is closed (a handler that inherits File keeps it after volboot exits).
type Lease struct {
	f   *os.File
	dir string
}

// File is the locked directory's descriptor, for a child process to
// inherit: the lock then lasts as long as the child keeps it open, even
// if this process dies first.
func (l *Lease) File() *os.File { return l.f }

// Dir is the tree's path.
func (l *Lease) Dir() string { return l.dir }

// Close releases the lease (for this process: a child that inherited
// File still holds it). Closing a nil Lease does nothing.
func (l *Lease) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// hold takes a Lease on the tree at dir: a shared flock on its directory,
// checked to be the directory at dir once taken. It fails wrapping
// fs.ErrNotExist when nothing is at dir, and when an exclusive holder
// keeps the lock past lockWait or ctx ends.
func hold(ctx context.Context, dir string) (*Lease, error) {
	deadline := time.Now().Add(lockWait)
	for {
		f, err := openDir(dir)
		if err != nil {
			return nil, err
		}
		ok, err := tryFlock(f, unix.LOCK_SH)
		if err != nil {
			f.Close()
			return nil, err
		}
		if ok {
			if at(f, dir) {
				return &Lease{f: f, dir: dir}, nil
			}
			// Retired between the open and the lock: look again.
			f.Close()
			continue
		}
		// Only a retirer takes the lock exclusively, for one rename.
		f.Close()
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("local tree %s: locked exclusively for more than %s", dir, lockWait)
		}
		if err := pause(ctx); err != nil {
			return nil, err
		}
	}
}

// retire moves the tree at dir into the trash with one rename, under an
// exclusive flock on its directory taken without waiting for users. When
// judged is set, only that directory is retired: errMoved when something
// else is at dir by then. It returns nil when nothing is at dir, and
// ErrInUse when other processes still hold leases on the tree after
// busyWait. The trash is not emptied here.
func retire(ctx context.Context, dir string, judged os.FileInfo, put func(string) error) error {
	deadline := time.Now().Add(busyWait)
	for {
		f, err := openDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			if judged != nil {
				return errMoved
			}
			return nil
		}
		if err != nil {
			return err
		}
		if judged != nil {
			if fi, err := f.Stat(); err != nil || !os.SameFile(fi, judged) {
				f.Close()
				return errMoved
			}
		}
		ok, err := tryFlock(f, unix.LOCK_EX)
		if err != nil {
			f.Close()
			return err
		}
		if ok {
			if !at(f, dir) {
				f.Close()
				if judged != nil {
					return errMoved
				}
				continue
			}
			err := put(dir)
			f.Close()
			if err != nil {
				return fmt.Errorf("retire the local tree %s: %w", dir, err)
			}
			return nil
		}
		// Users (shared holders), or another retirer (exclusive, for a
		// moment): only users make the tree in use.
		shared, err := tryFlock(f, unix.LOCK_SH)
		f.Close()
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			if shared {
				return ErrInUse
			}
			return fmt.Errorf("local tree %s: locked exclusively for more than %s", dir, busyWait)
		}
		if err := pause(ctx); err != nil {
			return err
		}
	}
}

// openDir opens the directory at dir for its lock (not following a link:
// a link at a tree's name is not a tree).
func openDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("local tree %s: not a directory (remove it by hand)", dir)
		}
		return nil, fmt.Errorf("local tree %s: %w", dir, err)
	}
	return f, nil
}

// tryFlock takes how (LOCK_SH or LOCK_EX) on f without waiting; false
// when another open file holds a conflicting lock.
func tryFlock(f *os.File, how int) (bool, error) {
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		}
		return false, fmt.Errorf("flock %s: %w", f.Name(), err)
	}
}

// at says whether f is still the directory at path.
func at(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(path)
	return err == nil && os.SameFile(a, b)
}

func pause(ctx context.Context) error {
	t := time.NewTimer(2 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
