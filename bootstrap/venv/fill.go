package venv

// Making a generation's files: the batches by directory, the directories,
// and the links, copies and writes of each batch (Build's workers), then
// their durability.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/wheel"
)

// apply writes or copies one file of the generation at root (a link only
// in Copy mode, where it is a copy too). copied reports a link made as a
// copy; kept, in a resumed build, a file that was already there and right.
// present says the resumed build's listing showed the name.
func (b *Builder) apply(root string, o *op, mode wheel.SyncMode, resumed, present bool) (copied, kept bool, err error) {
	dst := filepath.Join(root, filepath.FromSlash(o.dst))
	fsync := mode.FsyncFiles()
	switch o.kind {
	case opWrite:
		perm := os.FileMode(0o644)
		if o.exec {
			perm = 0o755
		}
		if resumed {
			kept, err = wheel.WriteOrKeep(dst, o.data, perm, fsync, present)
			return false, kept, err
		}
		return false, false, wheel.WriteNew(dst, o.data, perm, fsync)
	case opCopy:
		kept, err = copyOrKeep(o.src, dst, fsync, resumed, present)
		return false, kept, err
	}
	kept, err = copyOrKeep(o.src, dst, fsync, resumed, present)
	return !kept, kept, err
}

// batchMax bounds a batch, so one huge directory still spreads over
// several workers.
const batchMax = 512

// batches groups ops by destination directory, each group in chunks of at
// most batchMax. One worker per directory keeps the kernel's per-directory
// lock uncontended: with the files of one directory spread over all
// workers, a profile of a 98k-file generation spent a fifth of its CPU
// spinning on that lock. On NFS the lock is held across each round trip,
// so spreading the directories, not the files, is what keeps operations
// in flight.
func batches(ops []*op) [][]*op {
	byDir := map[string][]*op{}
	var order []string
	for _, o := range ops {
		d := parentDir(o.dst)
		if _, ok := byDir[d]; !ok {
			order = append(order, d)
		}
		byDir[d] = append(byDir[d], o)
	}
	var out [][]*op
	for _, d := range order {
		batch := byDir[d]
		// Sources from one store directory together: each is opened once.
		slices.SortFunc(batch, func(a, b *op) int { return strings.Compare(a.src, b.src) })
		for len(batch) > batchMax {
			out = append(out, batch[:batchMax])
			batch = batch[batchMax:]
		}
		out = append(out, batch)
	}
	return out
}

// dirMaker makes the directories of a generation on demand, each once,
// parents first, from any number of workers.
type dirMaker struct {
	root string
	mu   sync.Mutex
	made map[string]*dirOnce
	// resumed: the tree is a partial build taken over (resume.go). A
	// directory is then read before it is made: most exist, and the
	// listing tells which files do too. (Making an existing directory
	// costs more than reading it on MooseFS, and holds its parent's lock.)
	resumed bool
	inodes  inodeTrust
}

type dirOnce struct {
	once sync.Once
	err  error
	have dirInodes // in a resumed tree: the directory's files, once read
}

// dirs lists every directory ensure was asked for, and their parents.
// Call it once the workers are done.
func (m *dirMaker) dirs() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]bool, len(m.made))
	for d := range m.made {
		// A resumed tree's existing directories were read, not made, so
		// their parents were never asked for: add them.
		for ; d != "." && !out[d]; d = parentDir(d) {
			out[d] = true
		}
	}
	return out
}

// ensure makes the relative directory d and any missing parent.
func (m *dirMaker) ensure(d string) error {
	if d == "." {
		return nil
	}
	m.mu.Lock()
	o := m.made[d]
	if o == nil {
		o = &dirOnce{}
		m.made[d] = o
	}
	m.mu.Unlock()
	o.once.Do(func() {
		p := filepath.Join(m.root, filepath.FromSlash(d))
		if m.resumed {
			if o.have = m.inodes.read(p); o.have != nil {
				return
			}
		}
		if o.err = m.ensure(parentDir(d)); o.err != nil {
			return
		}
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			o.err = err
		}
		if m.resumed {
			o.have = dirInodes{} // new: holds nothing
		}
	})
	return o.err
}

// listing is what a resumed tree's directory d held when ensure read it;
// nil when the tree is not resumed.
func (m *dirMaker) listing(d string) dirInodes {
	if !m.resumed {
		return nil
	}
	if d == "." {
		return m.inodes.read(m.root)
	}
	m.mu.Lock()
	o := m.made[d]
	m.mu.Unlock()
	if o == nil {
		return nil
	}
	return o.have
}

// fillDir makes a batch of files in one directory of the generation at
// root. Store files are hard linked relative to open handles on the
// source and destination directories, so each path is walked once per
// batch rather than once per file; a link the filesystem refuses falls
// back to a copy of that file. In a resumed build, have is what the
// directory held (dirMaker.listing; nil if it could not be read) and
// inodes reads the source directories. It returns how many links
// became copies, how many files were kept, and on error the op that
// failed.
//
// Where the filesystem answers lookups from a listing the same thread
// holds open (listed: MooseFS, fileops.Filesystem.ListingAnswersLookups),
// each source directory is opened and read once, on a thread the batch
// keeps, so that the links' source lookups cost no round trip.
func (b *Builder) fillDir(root string, batch []*op, mode wheel.SyncMode, resumed, listed bool, have dirInodes, inodes *inodeTrust) (copied, kept int, failed *op, err error) {
	openDir := func(p string) (int, error) {
		return unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	openSource := openDir
	if listed {
		// Reading a directory costs two round trips (opendir, readdir):
		// worth it for a source directory that serves more links than
		// that.
		links := map[string]int{}
		for _, o := range batch {
			if o.kind == opLink {
				links[filepath.Dir(o.src)]++
			}
		}
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		openSource = func(p string) (int, error) {
			if links[filepath.Clean(p)] > 2 {
				return openListed(p)
			}
			return openDir(p)
		}
	}
	dstDir := filepath.Join(root, filepath.FromSlash(parentDir(batch[0].dst)))
	dfd := -1
	srcDir, sfd := "", -1
	// In a resumed build, what the directory already holds was read once
	// (have, see resume.go), and each source directory is read once: a
	// link already right costs nothing more, and no handle is opened for
	// a directory whose links are all there.
	var srcHave dirInodes
	srcListed := ""
	defer func() {
		for _, fd := range []int{dfd, sfd} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	for _, o := range batch {
		name := path.Base(o.dst)
		if o.kind != opLink || b.Mode == Copy {
			_, present := have[name]
			c, k, err := b.apply(root, o, mode, resumed, present)
			if err != nil {
				return copied, kept, o, err
			}
			if c {
				copied++
			}
			if k {
				kept++
			}
			continue
		}
		sd, base := filepath.Split(o.src)
		if resumed {
			if sd != srcListed {
				srcHave, srcListed = inodes.read(sd), sd
			}
			if ino := have[name]; ino != 0 && ino == srcHave[base] {
				kept++
				continue
			}
		}
		if dfd < 0 {
			if dfd, err = openDir(dstDir); err != nil {
				return copied, kept, o, fmt.Errorf("open %s: %w", dstDir, err)
			}
		}
		if sd != srcDir {
			if sfd >= 0 {
				unix.Close(sfd)
			}
			if sfd, err = openSource(sd); err != nil {
				return copied, kept, o, fmt.Errorf("open %s: %w", sd, err)
			}
			srcDir = sd
		}
		err := unix.Linkat(sfd, base, dfd, name, 0)
		if err == nil {
			continue
		}
		if resumed && errors.Is(err, unix.EEXIST) {
			// A hard link is there whole or not at all: the same inode as
			// the source is the file; anything else goes.
			if sameInode(sfd, base, dfd, name) {
				kept++
				continue
			}
			if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				return copied, kept, o, fmt.Errorf("replace %s: %w", o.dst, err)
			}
			if err = unix.Linkat(sfd, base, dfd, name, 0); err == nil {
				continue
			}
		}
		if !linkRefused(err) {
			return copied, kept, o, fmt.Errorf("link %s: %w", o.src, err)
		}
		k, err := copyOrKeep(o.src, filepath.Join(dstDir, name), mode.FsyncFiles(), resumed, false)
		if err != nil {
			return copied, kept, o, err
		}
		if k {
			kept++
		} else {
			copied++
		}
	}
	return copied, kept, nil, nil
}

// openListed opens directory p for reading and reads it to the end, so
// that (on a filesystem with ListingAnswersLookups) the calling thread's
// lookups in it are answered from the listing while the descriptor stays
// open. The caller holds its OS thread.
func openListed(p string) (int, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
		if n <= 0 {
			return fd, nil
		}
	}
}

// linkRefused reports a link error that means "this filesystem will not
// link here" (another device, no hard links, too many links), after which a
// copy is the answer.
func linkRefused(err error) bool {
	return errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK) ||
		errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EOPNOTSUPP)
}

// copyFile copies src to a new file dst keeping its mode and mtime (the
// mtime marks a finished copy for a resumed build, and keeps whatever
// timestamp bytecode a wheel ships valid).
func copyFile(src, dst string, fsync bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil && fsync {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && !fileops.CreateKeeps(st.Mode().Perm()) {
		err = os.Chmod(dst, st.Mode().Perm())
	}
	if err == nil {
		// Last: resume.go takes a copy whose mtime is its source's as
		// finished.
		err = os.Chtimes(dst, st.ModTime(), st.ModTime())
	}
	return err
}

// syncGeneration makes the generation durable per b.Sync. Hard links are
// directory entries: fsyncing the directories covers them; under SyncFiles
// written and copied files were fsynced as they were made.
func (b *Builder) syncGeneration(ctx context.Context, root string, l Layout, dirs map[string]bool, ops *fileops.Scheduler, mode wheel.SyncMode) error {
	switch mode {
	case wheel.SyncNone, wheel.SyncClose:
		return nil
	case wheel.SyncFS:
		return atomicfile.SyncFS(root)
	}
	// The skeleton's regular files; its links are covered by their directories.
	paths := []string{".", "pyvenv.cfg"}
	for _, f := range SkeletonFiles(l, b.Python) {
		if strings.Contains(path.Base(f), "activate") {
			paths = append(paths, f)
		}
	}
	for d := range dirs {
		paths = append(paths, d)
	}
	for _, d := range []string{"bin", "lib", "include"} {
		if !dirs[d] {
			paths = append(paths, d)
		}
	}
	return ops.FsyncAll(ctx, root, paths)
}
