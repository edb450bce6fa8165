package fileops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Filesystem is what the installer needs to know of the filesystem a store
// or generation lives on.
type Filesystem struct {
	Name string
	// Network: every metadata operation is a round trip, so many are
	// kept in flight.
	Network bool
	// SyncFS: syncfs(2) is known to bring every file written through this
	// mount to stable storage. Local filesystems implement it over the
	// block device; NFS writes back and COMMITs every dirty inode (and
	// close(2) has already flushed). FUSE is left out on purpose: the
	// kernel only forwards syncfs to servers that ask for it (virtiofs),
	// so on MooseFS, JuiceFS or s3fs it returns success having flushed
	// nothing the daemon buffers.
	SyncFS bool
	// FlushOnClose: close(2) of a written file returns only once its data
	// is on the storage servers, with their error if not, and metadata
	// operations (create, mkdir, link, rename) are durable at the
	// metadata server when they return. MooseFS (see isMooseFS).
	FlushOnClose bool
	// ListingAnswersLookups: while a thread holds a directory open and has
	// read it, the filesystem answers that thread's lookups of names in it
	// from the listing instead of asking the server. mfsmount keeps such a
	// cache per open directory, matched by the caller's thread id
	// (dcache_lookup in mfsclient/dirattrcache.c). A file's entry is
	// otherwise never cached by the kernel there (mfsentrycacheto defaults
	// to 0), so each link(2) from a store directory costs a lookup at the
	// master; one opendir and one readdir answer them all.
	ListingAnswersLookups bool
}

// Filesystems by statfs f_type.
var filesystems = map[int64]Filesystem{
	0xef53:     {Name: "ext4", SyncFS: true}, // also ext2 and ext3
	0x58465342: {Name: "xfs", SyncFS: true},
	0x9123683e: {Name: "btrfs", SyncFS: true},
	0xf2f52010: {Name: "f2fs", SyncFS: true},
	0x2fc12fc1: {Name: "zfs", SyncFS: true},
	0x01021994: {Name: "tmpfs", SyncFS: true},
	0x794c7630: {Name: "overlayfs", SyncFS: true}, // syncs the upper layer
	0x6969:     {Name: "nfs", Network: true, SyncFS: true},
	0x00c36400: {Name: "ceph", Network: true, SyncFS: true},
	fuseMagic:  {Name: "fuse", Network: true},
	0x517b:     {Name: "smb", Network: true},
	0xfe534d42: {Name: "smb2", Network: true},
	0xff534d42: {Name: "cifs", Network: true},
	0x01021997: {Name: "9p", Network: true},
	0x01161970: {Name: "gfs2", Network: true},
	0x7461636f: {Name: "ocfs2", Network: true},
	0x0bd00bd0: {Name: "lustre", Network: true},
	0x5346414f: {Name: "afs", Network: true},
}

// FilesystemOf describes the filesystem holding dir. An unknown type, or a
// dir that cannot be statted, gets the cautious answer: local (few jobs)
// and no trusted syncfs.
func FilesystemOf(dir string) Filesystem {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Filesystem{Name: "unknown"}
	}
	t := int64(uint32(st.Type))
	fsys, ok := filesystems[t]
	if !ok {
		return Filesystem{Name: fmt.Sprintf("0x%x", t)}
	}
	if t == fuseMagic {
		if m, ok := mountOf(dir); ok && isMooseFS(m) {
			fsys.Name, fsys.FlushOnClose, fsys.ListingAnswersLookups = "moosefs", true, true
		}
	}
	return fsys
}

const fuseMagic = 0x65735546

// Why FlushOnClose holds for MooseFS, read from mfsmount's
// source (mfsclient/mfs_fuse.c, the same in 3.0.117, Debian's, and 4.59):
//
//   - mfs_flush, which the kernel calls on every close(2) of a FUSE file,
//     runs write_data_flush — exactly what mfs_fsync runs — unless the
//     mount sets mfsfsyncmintime above 0 (default 0: "always do fsync
//     before close"), and returns its error to close. An fsync before the
//     close therefore does the same work, one more request later.
//   - mfsmount implements no fsyncdir: the kernel turns the ENOSYS into
//     success. Each create, mkdir, link and rename is a synchronous
//     request to the master, which has applied (and changelogged) it when
//     the call returns. An fsync of a directory is a lookup and an opendir
//     at the master for nothing.
//
// So on MooseFS a file is as durable when its close succeeds as fsync
// would make it, and a directory entry when its call returns; volboot's
// "close" durability relies on that (wheel.SyncClose). A volume mounted
// with mfsfsyncmintime > 0 breaks the first point: use --durability files
// there. The rig test TestMooseFSCloseIsDurable kills a client's mfsmount
// right after its closes return and reads every file from another client.
//
// isMooseFS recognises an mfsmount mount: fstype fuse.mfs, or plain fuse
// with the source mfsmount gives it ("mfs#master:port").
func isMooseFS(m mountEntry) bool {
	return m.fstype == "fuse.mfs" || m.fstype == "fuse.mfsmount" ||
		strings.HasPrefix(m.fstype, "fuse") && strings.HasPrefix(m.source, "mfs#")
}

// mountEntry is a line of /proc/self/mountinfo, the fields used.
type mountEntry struct {
	point, fstype, source string
}

// mountOf finds the mount holding dir: the entry of /proc/self/mountinfo
// with the longest mount point that is dir or one of its parents (the last
// one listed wins among equals: it is mounted on top).
func mountOf(dir string) (mountEntry, bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return mountEntry{}, false
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return mountEntry{}, false
	}
	return mountFor(string(b), abs)
}

// mountFor picks the mount holding the absolute, clean path abs from the
// text of a mountinfo file.
func mountFor(mountinfo, abs string) (mountEntry, bool) {
	var best mountEntry
	found := false
	for _, line := range strings.Split(mountinfo, "\n") {
		fields := strings.Fields(line)
		// id parent major:minor root point options [optional...] - fstype source superoptions
		sep := slices.Index(fields, "-")
		if sep < 6 || len(fields) < sep+3 {
			continue
		}
		m := mountEntry{point: unescapeMount(fields[4]), fstype: fields[sep+1], source: unescapeMount(fields[sep+2])}
		if m.point != abs && !strings.HasPrefix(abs, strings.TrimSuffix(m.point, "/")+"/") {
			continue
		}
		if !found || len(m.point) >= len(best.point) {
			best, found = m, true
		}
	}
	return best, found
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space,
// \043 for '#').
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// KnownLocal reports whether dir is on a filesystem known to be local
// (ext4, xfs, tmpfs, ...): one whose every client is this kernel, so that
// what one process writes, every other sees at once, with no cache of a
// remote server in between. Unknown types are not.
func KnownLocal(dir string) bool {
	fsys := FilesystemOf(dir)
	return !fsys.Network && fsys.SyncFS
}

// DefaultJobs is how many file operations to keep in flight in dir when the
// caller does not say. On a network or FUSE filesystem (MooseFS on RunPod)
// an operation costs a round trip and the server absorbs the parallelism,
// so 64 are kept in flight. On a local filesystem a create costs CPU in the
// kernel and creators contend for directory locks, so a few per core are
// enough (on the 2-core build machine, 32 in flight spent more kernel time
// in openat than 4 in one profile; wall times were within noise).
func DefaultJobs(dir string) int {
	if FilesystemOf(dir).Network {
		return 64
	}
	return max(4, 2*runtime.NumCPU())
}

// ForDir is the scheduler for bulk work in dir when the caller has none to
// share: DefaultJobs(dir) in flight, one operation per directory key.
func ForDir(dir string) *Scheduler { return New(DefaultJobs(dir), 1) }

// MakeDirs creates the relative, clean, '/'-separated directories under
// root (existing ones are fine), parents first, a depth level at a time.
// The children of one parent are made by one operation relative to a
// handle on the parent (one lookup of the parent, not one per child), and
// parents are spread over the scheduler's slots.
func (s *Scheduler) MakeDirs(ctx context.Context, root string, dirs map[string]bool) error {
	byDepth := map[int]map[string][]string{} // depth -> parent -> children's names
	maxDepth := 0
	for d := range dirs {
		n := strings.Count(d, "/")
		if byDepth[n] == nil {
			byDepth[n] = map[string][]string{}
		}
		parent, name := ".", d
		if i := strings.LastIndexByte(d, '/'); i >= 0 {
			parent, name = d[:i], d[i+1:]
		}
		byDepth[n][parent] = append(byDepth[n][parent], name)
		maxDepth = max(maxDepth, n)
	}
	for depth := 0; depth <= maxDepth; depth++ {
		g := s.Group(ctx)
		for parent, names := range byDepth[depth] {
			g.Go(parent, func() error {
				p := filepath.Join(root, filepath.FromSlash(parent))
				pfd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("open %s: %w", p, err)
				}
				defer unix.Close(pfd)
				for _, name := range names {
					if err := unix.Mkdirat(pfd, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
						return fmt.Errorf("create directory %s: %w", path.Join(parent, name), err)
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// FsyncAll fsyncs the given paths (relative to root, files or directories)
// under the scheduler. Directories that cannot be fsynced (EINVAL) are
// tolerated.
func (s *Scheduler) FsyncAll(ctx context.Context, root string, paths []string) error {
	g := s.Group(ctx)
	for _, p := range paths {
		g.Go(p, func() error {
			f, err := os.Open(filepath.Join(root, filepath.FromSlash(p)))
			if err != nil {
				return fmt.Errorf("fsync %s: %w", p, err)
			}
			defer f.Close()
			if err := f.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("fsync %s: %w", p, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// CreateKeeps reports whether a file created with mode perm gets exactly
// perm: whether the process's umask clears none of its bits. When it does,
// no chmod after the create is needed — on a network filesystem a round
// trip saved per executable file. The umask is read once, from
// /proc/self/status (reading it with umask(2) would change it for a moment
// under every other goroutine creating files); where it cannot be read,
// the answer is no, and callers chmod.
func CreateKeeps(perm os.FileMode) bool {
	mask, ok := processUmask()
	return ok && uint32(perm.Perm())&mask == 0
}

var processUmask = sync.OnceValues(func() (uint32, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return uint32(m), err == nil
		}
	}
	return 0, false
})
