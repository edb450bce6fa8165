package locallayout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/pack"
	"github.com/volboot/volboot/bootstrap/trash"
)

// MarkerName marks a local tree complete. It is written last, inside the
// temporary directory, before the tree is renamed into place.
const MarkerName = ".complete"

// MarkerSchema is the version of the local tree's marker.
const MarkerSchema = 1

// Marker is a local tree's .complete: what it was made from. A tree is
// reused only when all of it matches the boot that wants it.
type Marker struct {
	Schema     int    `json:"schema"`
	Generation string `json:"generation"`
	Pack       string `json:"pack"`   // the pack's sha256
	Volume     string `json:"volume"` // the volume's root the links point into
	// BootID is the kernel's boot id when the tree was made: its files
	// were never fsynced (a tree is cheap to make again), so after a
	// reboot it may have lost data and is made again.
	BootID string `json:"boot_id"`
	Files  int    `json:"files"`
	Links  int    `json:"links"`
	Bytes  int64  `json:"bytes"`
}

// Options says which generation to lay out where.
type Options struct {
	// LocalDir is the directory on the container's disk that holds local
	// trees (envs/<generation>).
	LocalDir   string
	Volume     string // the volume's root (absolute)
	Generation string
	PackPath   string // the pack on the volume
	Pack       PackRecord
	// Budget is the most bytes the tree may take; 0: no limit.
	Budget int64
	// Ops schedules the file creations (default: fileops.ForDir of the
	// local directory: a few per core, since local creates cost CPU, one
	// directory at a time, since the kernel serializes creates in one).
	Ops    *fileops.Scheduler
	Logger *zap.Logger
	// BootID overrides the kernel's boot id (tests).
	BootID string
}

// Result is a laid-out local tree.
type Result struct {
	Dir    string
	Reused bool
	Marker Marker
	Took   time.Duration
	// Lease keeps the tree at Dir while it is held (the in-use rule,
	// inuse.go): the caller holds it for as long as anything runs from
	// the tree, and closes it.
	Lease *Lease
}

// Dir is the local tree of generation id under localDir.
func Dir(localDir, id string) string { return filepath.Join(localDir, "envs", id) }

// TrashDir holds what left envs under localDir: trees retired, dead
// processes' half-made trees. Nothing there is read as a tree; Collect
// empties it.
func TrashDir(localDir string) string { return filepath.Join(localDir, "trash") }

// attempts bounds Materialize's rounds of look, retire, make, publish:
// each lost round means another process of the container published or
// retired the tree meanwhile.
const attempts = 4

// Materialize returns the local tree of o.Generation under o.LocalDir,
// with a Lease on it, reusing one an earlier container left when its
// marker matches (same generation, pack, volume and kernel boot), and
// otherwise making it: a fresh temporary directory is filled from the
// pack (its digest checked as it streams), each VolumeLink becomes a
// symbolic link to its file on the volume (file links only: directories
// stay real, so that $ORIGIN RPATHs such as torch's ../../nvidia resolve
// inside the tree), every link's target is checked to exist with its
// size, the marker is written, the directory is leased and renamed into
// place. Concurrent callers for one generation each build and the first
// rename wins; the others use the winner's tree.
//
// A tree in place that does not match is retired into TrashDir with one
// rename, unless another process runs from it (a Lease): then Materialize
// fails wrapping ErrInUse and leaves it. Nothing is removed here: trees
// retired and half-made ones of dead processes go to the trash, which
// Collect empties off the boot path.
//
// The reuse check takes a lock and reads one file. The caller must hold a
// use-lease on the generation on the volume for as long as the tree is
// used: the links point at store files gc would otherwise remove.
func Materialize(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.BootID == "" {
		o.BootID = bootID()
	}
	final := Dir(o.LocalDir, o.Generation)
	can := localTrash(o.LocalDir, o.Logger)
	prepared := false
	prepare := func() error {
		if prepared {
			return nil
		}
		if o.Pack.SHA256 == "" {
			return errNoPack
		}
		if o.Budget > 0 && o.Pack.Bytes > o.Budget {
			return fmt.Errorf("local tree of generation %s needs %d MiB, the local budget is %d MiB", o.Generation, o.Pack.Bytes>>20, o.Budget>>20)
		}
		if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
			return fmt.Errorf("local dir: %w", err)
		}
		retireDeadLeftovers(filepath.Dir(final), can, o.Logger)
		prepared = true
		return nil
	}
	for range attempts {
		lease, err := hold(ctx, final)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, err
		default:
			m, why := reusable(final, o)
			if why == "" {
				return &Result{Dir: final, Reused: true, Marker: *m, Took: time.Since(start), Lease: lease}, nil
			}
			judged, serr := lease.f.Stat()
			lease.Close()
			if serr != nil {
				return nil, fmt.Errorf("local tree %s: %w", final, serr)
			}
			if err := prepare(); err != nil {
				return nil, err
			}
			o.Logger.Info("the local tree in place cannot be reused; making it again", zap.String("dir", final), zap.String("why", why))
			switch err := retire(ctx, final, judged, can.Put); {
			case errors.Is(err, errMoved):
				continue // another process retired it, or published anew: look again
			case errors.Is(err, ErrInUse):
				return nil, fmt.Errorf("the local tree %s cannot serve this worker (%s) and is not replaced: %w", final, why, err)
			case err != nil:
				return nil, err
			}
		}
		if err := prepare(); err != nil {
			return nil, err
		}
		res, err := makeTree(ctx, final, o, can)
		if errors.Is(err, errMoved) {
			continue // another process published first: use its tree
		}
		if err != nil {
			return nil, err
		}
		res.Took = time.Since(start)
		return res, nil
	}
	return nil, fmt.Errorf("local tree %s: other processes kept publishing or retiring it; gave up after %d rounds", final, attempts)
}

// makeTree lays the pack out in a temporary directory beside final,
// leases it and publishes it at final, which must be free: errMoved when
// another process published there first (the temporary tree goes to the
// trash).
func makeTree(ctx context.Context, final string, o Options, can *trash.Can) (*Result, error) {
	tmp := atomicfile.TempName(final)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("local dir: %w", err)
	}
	ok := false
	var lease *Lease
	defer func() {
		if !ok {
			lease.Close()
			can.Discard(tmp)
		}
	}()
	mk, err := unpack(ctx, tmp, o)
	if err != nil {
		return nil, err
	}
	mk.Generation, mk.Pack, mk.Volume, mk.BootID, mk.Schema = o.Generation, o.Pack.SHA256, o.Volume, o.BootID, MarkerSchema
	data, _ := json.MarshalIndent(mk, "", "  ")
	if err := atomicfile.WriteVolatile(filepath.Join(tmp, MarkerName), append(data, '\n'), 0o644); err != nil {
		return nil, err
	}
	// Leased before it is published: the tree is never at its name
	// without a holder.
	f, err := openDir(tmp)
	if err != nil {
		return nil, err
	}
	lease = &Lease{f: f, dir: final}
	if got, err := tryFlock(f, unix.LOCK_SH); err != nil || !got {
		return nil, fmt.Errorf("lease the local tree %s: %v", tmp, err)
	}
	if err := renameNoReplace(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, unix.ENOTEMPTY) {
			o.Logger.Info("another process laid the local tree out first; using it", zap.String("dir", final))
			return nil, errMoved
		}
		return nil, fmt.Errorf("publish the local tree %s: %w", final, err)
	}
	ok = true
	return &Result{Dir: final, Marker: *mk, Lease: lease}, nil
}

// renameNoReplace renames oldpath to newpath unless something is there
// (EEXIST): publishing never replaces a tree another process may have
// leased. Where the filesystem has no RENAME_NOREPLACE, a plain rename,
// which refuses a non-empty directory (ENOTEMPTY) too.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return os.Rename(oldpath, newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// localTrash is the trash of the local directory. Its emptying keeps two
// removals in flight: it runs while the handler loads its model, on a
// container with few cores, and nothing waits for it.
func localTrash(localDir string, log *zap.Logger) *trash.Can {
	return &trash.Can{Dir: TrashDir(localDir), Logger: log, Ops: fileops.New(2, 1)}
}

// reusable reads the marker of the tree at dir and says why it cannot
// serve o ("" when it can).
func reusable(dir string, o Options) (*Marker, string) {
	m, err := ReadMarker(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, "no complete tree"
	case err != nil:
		return nil, err.Error()
	case m.Generation != o.Generation:
		return m, "made for generation " + m.Generation
	case o.Pack.SHA256 != "" && m.Pack != o.Pack.SHA256:
		return m, "made from another pack"
	case m.Volume != o.Volume:
		return m, "its links point into " + m.Volume
	case m.BootID != o.BootID:
		return m, "made before the machine restarted"
	}
	return m, ""
}

// ReadMarker reads a local tree's marker; it fails (wrapping
// fs.ErrNotExist) for a tree that is absent or incomplete.
func ReadMarker(dir string) (*Marker, error) {
	data, err := os.ReadFile(filepath.Join(dir, MarkerName))
	if err != nil {
		return nil, fmt.Errorf("local tree %s: %w", dir, err)
	}
	var m Marker
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("local tree %s: marker: %w", dir, err)
	}
	if m.Schema != MarkerSchema {
		return nil, fmt.Errorf("local tree %s: marker schema %d, this volboot reads %d", dir, m.Schema, MarkerSchema)
	}
	return &m, nil
}

// unpack fills tmp from the pack and checks the volume links. The
// reader makes directories in order; file creations go through create,
// keyed by their directory, with a bound on the bytes waiting to be
// written.
func unpack(ctx context.Context, tmp string, o Options) (*Marker, error) {
	f, err := os.Open(o.PackPath)
	if err != nil {
		return nil, fmt.Errorf("local tree of generation %s: open its pack: %w", o.Generation, err)
	}
	defer f.Close()
	r, err := newPackReader(f, o)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	ops := o.Ops
	if ops == nil {
		ops = fileops.ForDir(tmp)
	}
	g := ops.Group(ctx)
	gctx := g.Context()
	create := g.Go
	// Contents wait in memory for their creation; this bounds them.
	inflight := semaphore.NewWeighted(64 << 20)
	made := map[string]bool{".": true}
	mkdirs := func(d string) error {
		var todo []string
		for ; !made[d]; d = path.Dir(d) {
			todo = append(todo, d)
		}
		for i := len(todo) - 1; i >= 0; i-- {
			if err := os.Mkdir(filepath.Join(tmp, todo[i]), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			made[todo[i]] = true
		}
		return nil
	}
	var mk Marker
	type link struct {
		path string
		size int64
	}
	var links []link
	var rerr error
	for {
		if err := gctx.Err(); err != nil {
			rerr = err
			break
		}
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
		dir := path.Dir(e.Path)
		if err := mkdirs(dir); err != nil {
			rerr = fmt.Errorf("local tree: %w", err)
			break
		}
		dst := filepath.Join(tmp, e.Path)
		switch e.Kind {
		case pack.Dir:
			if err := mkdirs(e.Path); err != nil {
				rerr = fmt.Errorf("local tree: %w", err)
			}
		case pack.File, pack.Exec:
			mk.Files++
			mk.Bytes += e.Size
			if o.Budget > 0 && mk.Bytes > o.Budget {
				rerr = fmt.Errorf("local tree of generation %s: its files pass the local budget of %d MiB", o.Generation, o.Budget>>20)
				break
			}
			data := make([]byte, e.Size)
			if _, err := io.ReadFull(r, data); err != nil {
				rerr = err
				break
			}
			if err := inflight.Acquire(gctx, max(1, e.Size)); err != nil {
				rerr = err
				break
			}
			mode := os.FileMode(0o644)
			if e.Kind == pack.Exec {
				mode = 0o755
			}
			size, mtime := e.Size, time.Unix(0, e.MTime)
			create(dir, func() error {
				defer inflight.Release(max(1, size))
				return writeFile(dst, data, mode, mtime)
			})
		case pack.Symlink:
			target := e.Target
			create(dir, func() error { return symlinkFile(target, dst) })
		case pack.VolumeLink:
			mk.Links++
			target := filepath.Join(o.Volume, filepath.FromSlash(e.Target))
			links = append(links, link{target, e.Size})
			create(dir, func() error { return symlinkFile(target, dst) })
		}
		if rerr != nil {
			break
		}
	}
	werr := g.Wait()
	if rerr != nil {
		return nil, rerr
	}
	if werr != nil {
		return nil, fmt.Errorf("local tree of generation %s: %w", o.Generation, werr)
	}
	// Every link must reach its file on the volume, of the size packed:
	// a stat each, many in flight (each is a round trip there).
	vg, vctx := errgroup.WithContext(ctx)
	vg.SetLimit(64)
	for _, l := range links {
		vg.Go(func() error {
			if err := vctx.Err(); err != nil {
				return err
			}
			fi, err := os.Stat(l.path)
			if err != nil {
				return fmt.Errorf("local tree of generation %s: %w (volboot repair)", o.Generation, err)
			}
			if fi.Size() != l.size {
				return fmt.Errorf("local tree of generation %s: %s has %d bytes, the pack says %d (volboot repair)", o.Generation, l.path, fi.Size(), l.size)
			}
			return nil
		})
	}
	if err := vg.Wait(); err != nil {
		return nil, err
	}
	return &mk, nil
}

// writeFile makes dst with data and the mtime the pack recorded (the
// bytecode of a source checks it, where a store entry made by an older
// volboot has timestamp-based bytecode).
func writeFile(dst string, data []byte, mode os.FileMode, mtime time.Time) error {
	return fileops.CreateFile(dst, data, mode, fileops.CreateOptions{MTime: mtime})
}

func symlinkFile(target, dst string) error { return os.Symlink(target, dst) }

// retireDeadLeftovers moves into the trash what earlier processes of
// this machine left half made in envs: a temporary name whose writer is
// gone (or is this pid, but another process: a restarted container's pid
// 1). One rename each, so the boot path does not pay for the removal.
func retireDeadLeftovers(envs string, can *trash.Can, log *zap.Logger) int {
	dead := deadLeftovers(envs)
	for _, p := range dead {
		log.Info("moving a local tree an earlier process left half made to the trash", zap.String("dir", p))
		can.Discard(p)
	}
	return len(dead)
}

// deadLeftovers lists the half-made trees in envs whose writers are gone
// (see retireDeadLeftovers).
func deadLeftovers(envs string) []string {
	ents, err := os.ReadDir(envs)
	if err != nil {
		return nil
	}
	host, _ := os.Hostname()
	host = atomicfile.HostToken(host)
	var out []string
	for _, e := range ents {
		ti, ok := atomicfile.ParseTempName(e.Name())
		if !ok || atomicfile.Mine(ti) {
			continue
		}
		dead := false
		switch {
		case ti.Host != host:
			// Another container that shared this disk: its own later
			// boot would have cleaned up within the hour.
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Hour {
				dead = true
			}
		case ti.PID == os.Getpid():
			dead = true
		default:
			dead = errors.Is(syscall.Kill(ti.PID, 0), syscall.ESRCH)
		}
		if dead {
			out = append(out, filepath.Join(envs, e.Name()))
		}
	}
	return out
}

// bootID is the kernel's boot id, "" where there is none.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

// free is the space available to this user on the filesystem holding dir.
func free(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func newPackReader(f *os.File, o Options) (*pack.Reader, error) {
	return pack.NewReader(f, o.PackPath, o.Pack.SHA256)
}
