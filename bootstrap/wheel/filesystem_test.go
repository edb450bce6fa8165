package wheel

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bootstrap/fileops"
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
		fsys := fileops.FilesystemOf(dir)
		want := SyncFiles
		if fsys.SyncFS {
			want = SyncFS
		}
		if got := SyncAuto.Resolve(dir); got != want {
			t.Errorf("auto on %s (%s) resolved to %v, want %v", dir, fsys.Name, got, want)
		}
		if uint32(st.Type) == unix.TMPFS_MAGIC && want != SyncFS {
			t.Errorf("tmpfs at %s does not trust syncfs", dir)
		}
	}
}
