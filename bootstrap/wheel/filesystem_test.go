package wheel

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSyncModeResolve(t *testing.T) {
	for _, m := range []SyncMode{SyncFiles, SyncFS, SyncNone} {
		if got := m.Resolve(t.TempDir()); got != m {
			t.Errorf("%v resolved to %v", m, got)
		}
	}
	// A directory that cannot be statted gets the cautious mode.
	if got := SyncAuto.Resolve(filepath.Join(t.TempDir(), "missing")); got != SyncFiles {
		t.Errorf("auto on a missing directory resolved to %v, want files", got)
	}
	// The machine's own filesystems: whatever they are, auto must agree
	// with the table, and tmpfs (where there is one) trusts syncfs.
	for _, dir := range []string{t.TempDir(), "/dev/shm"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) != nil {
			continue
		}
		fsys, known := filesystems[int64(uint32(st.Type))]
		want := SyncFiles
		if known && fsys.syncfs {
			want = SyncFS
		}
		if got := SyncAuto.Resolve(dir); got != want {
			t.Errorf("auto on %s (%s) resolved to %v, want %v", dir, filesystemOf(dir).name, got, want)
		}
		if uint32(st.Type) == unix.TMPFS_MAGIC && want != SyncFS {
			t.Errorf("tmpfs at %s does not trust syncfs", dir)
		}
	}
	// FUSE must never trust syncfs: the kernel does not forward it to
	// most FUSE servers (MooseFS on RunPod among them).
	if filesystems[unix.FUSE_SUPER_MAGIC].syncfs {
		t.Error("FUSE trusts syncfs")
	}
	if !filesystems[unix.FUSE_SUPER_MAGIC].network || !filesystems[unix.NFS_SUPER_MAGIC].network {
		t.Error("FUSE and NFS are not network filesystems")
	}
}
