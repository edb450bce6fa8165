package wheel

import (
	"fmt"

	"github.com/volboot/volboot/bootstrap/fileops"
)

// Resolve turns SyncAuto into the mode for the filesystem holding dir:
// SyncClose where close(2) flushes to the servers (MooseFS), SyncFS where
// syncfs(2) is trusted, SyncFiles elsewhere. Other modes are returned as
// they are.
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
	switch fsys := fileops.FilesystemOf(dir); {
	case fsys.FlushOnClose:
		return SyncClose
	case fsys.SyncFS:
		return SyncFS
	}
	return SyncFiles
}

// ParseSyncMode reads a mode as String spells it.
func ParseSyncMode(s string) (SyncMode, error) {
	for _, m := range []SyncMode{SyncAuto, SyncFiles, SyncFS, SyncClose, SyncNone} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("durability %q: want auto, files, fs, close or none", s)
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
	case SyncClose:
		return "close"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}
