package wheel

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sync/errgroup"

	"golang.org/x/sys/unix"
)

// filesystem is what the installer needs to know of the filesystem a store
// or generation lives on.
type filesystem struct {
	name string
	// network: every metadata operation is a round trip, so many are
	// kept in flight.
	network bool
	// syncfs: syncfs(2) is known to bring every file written through this
	// mount to stable storage. Local filesystems implement it over the
	// block device; NFS writes back and COMMITs every dirty inode (and
	// close(2) has already flushed). FUSE is left out on purpose: the
	// kernel only forwards syncfs to servers that ask for it (virtiofs),
	// so on MooseFS, JuiceFS or s3fs it returns success having flushed
	// nothing the daemon buffers.
	syncfs bool
}

// filesystems by statfs f_type.
var filesystems = map[int64]filesystem{
	0xef53:     {name: "ext4", syncfs: true}, // also ext2 and ext3
	0x58465342: {name: "xfs", syncfs: true},
	0x9123683e: {name: "btrfs", syncfs: true},
	0xf2f52010: {name: "f2fs", syncfs: true},
	0x2fc12fc1: {name: "zfs", syncfs: true},
	0x01021994: {name: "tmpfs", syncfs: true},
	0x794c7630: {name: "overlayfs", syncfs: true}, // syncs the upper layer
	0x6969:     {name: "nfs", network: true, syncfs: true},
	0x00c36400: {name: "ceph", network: true, syncfs: true},
	0x65735546: {name: "fuse", network: true},
	0x517b:     {name: "smb", network: true},
	0xfe534d42: {name: "smb2", network: true},
	0xff534d42: {name: "cifs", network: true},
	0x01021997: {name: "9p", network: true},
	0x01161970: {name: "gfs2", network: true},
	0x7461636f: {name: "ocfs2", network: true},
	0x0bd00bd0: {name: "lustre", network: true},
	0x5346414f: {name: "afs", network: true},
}

// filesystemOf describes the filesystem holding dir. An unknown type, or
// a dir that cannot be statted, gets the cautious answer: local (few jobs)
// and no trusted syncfs.
func filesystemOf(dir string) filesystem {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return filesystem{name: "unknown"}
	}
	t := int64(uint32(st.Type))
	if fsys, ok := filesystems[t]; ok {
		return fsys
	}
	return filesystem{name: fmt.Sprintf("0x%x", t)}
}

// KnownLocal reports whether dir is on a filesystem known to be local
// (ext4, xfs, tmpfs, ...): one whose every client is this kernel, so that
// what one process writes, every other sees at once, with no cache of a
// remote server in between. Unknown types are not.
func KnownLocal(dir string) bool {
	fsys := filesystemOf(dir)
	return !fsys.network && fsys.syncfs
}

// DefaultJobs is how many file operations to keep in flight in dir when the
// caller does not say. On a network or FUSE filesystem (MooseFS on RunPod)
// an operation costs a round trip and the server absorbs the parallelism,
// so 64 are kept in flight. On a local filesystem a create costs CPU in the
// kernel and creators contend for directory locks, so a few per core are
// enough (on the 2-core build machine, 32 in flight spent more kernel time
// in openat than 4 in one profile; wall times were within noise).
func DefaultJobs(dir string) int {
	if filesystemOf(dir).network {
		return 64
	}
	return max(4, 2*runtime.NumCPU())
}

// Resolve turns SyncAuto into the mode for the filesystem holding dir:
// SyncFS where syncfs(2) is trusted, SyncFiles elsewhere. Other modes are
// returned as they are.
//
// Why not SyncFiles everywhere: on ext4 an fsync per file writes that
// file's inode-table block synchronously, the same block once for each
// of the 16 inodes it holds, while syncfs writes each dirty block once. On
// the build machine a 58k-file stack took 19.6 s to install with an fsync
// per file and 8.5 s with a syncfs per store entry (7 s without any).
func (m SyncMode) Resolve(dir string) SyncMode {
	if m != SyncAuto {
		return m
	}
	if filesystemOf(dir).syncfs {
		return SyncFS
	}
	return SyncFiles
}

// ParseSyncMode reads a mode as String spells it.
func ParseSyncMode(s string) (SyncMode, error) {
	for _, m := range []SyncMode{SyncAuto, SyncFiles, SyncFS, SyncNone} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("durability %q: want auto, files, fs or none", s)
}

// String names the mode as --durability and the bench's -sync spell it.
func (m SyncMode) String() string {
	switch m {
	case SyncAuto:
		return "auto"
	case SyncFiles:
		return "files"
	case SyncFS:
		return "fs"
	case SyncNone:
		return "none"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// MakeDirs creates the relative, clean, '/'-separated directories under
// root (existing ones are fine), parents first, a depth level at a time.
// The children of one parent are made by one worker relative to a handle
// on the parent: siblings made by several workers at once contend for the
// parent's lock. Each worker holds a slot of sem, which callers share with
// their other file operations to bound the total in flight.
func MakeDirs(ctx context.Context, root string, dirs map[string]bool, sem chan struct{}) error {
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
		g, gctx := errgroup.WithContext(ctx)
		for parent, names := range byDepth[depth] {
			if !acquire(gctx, sem) {
				break
			}
			g.Go(func() error {
				defer func() { <-sem }()
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
	return ctx.Err()
}

// acquire takes a slot of sem for one file operation, or returns false,
// holding none, once ctx is done. A slot won in the same instant as the
// cancellation is given back: the semaphore is shared by every wheel of an
// unpack, and a slot kept by a failed wheel would be lost to the others.
func acquire(ctx context.Context, sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		if ctx.Err() != nil {
			<-sem
			return false
		}
		return true
	case <-ctx.Done():
		return false
	}
}

// Filesystem names the filesystem holding dir (by statfs f_type: "ext4",
// "fuse", "nfs", or the type in hex) and says whether every metadata
// operation on it is a network round trip (network and FUSE filesystems).
func Filesystem(dir string) (name string, network bool) {
	fsys := filesystemOf(dir)
	return fsys.name, fsys.network
}
