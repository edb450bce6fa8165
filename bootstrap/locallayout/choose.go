package locallayout

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/volboot/volboot/bootstrap/fileops"
)

// Mode is the layout a worker asks for (--layout).
type Mode string

const (
	ModeVolume Mode = "volume" // run the generation from the volume
	ModeLocal  Mode = "local"  // small files on the container's disk
	// ModeAuto is local where the volume is a network or FUSE filesystem
	// and the local budget holds the tree, volume otherwise.
	ModeAuto Mode = "auto"
)

// ParseMode reads --layout.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeVolume, ModeLocal, ModeAuto:
		return m, nil
	}
	return "", fmt.Errorf("layout %q: want volume, local or auto", s)
}

// Reserve is what the default local budget leaves free on the local
// directory's filesystem: the handler, its temporary files and logs need
// the container disk too.
const Reserve = 1 << 30

// WantLocal says whether a worker in mode m should lay its generation out
// locally, before the budget is known, and why (a sentence for the log).
func WantLocal(m Mode, volume string) (bool, string) {
	switch m {
	case ModeVolume:
		return false, "--layout volume"
	case ModeLocal:
		return true, "--layout local"
	}
	fsys := fileops.FilesystemOf(volume)
	if fsys.Network {
		return true, fmt.Sprintf("the volume is on %s, a network or FUSE filesystem, where each import costs round trips", fsys.Name)
	}
	return false, fmt.Sprintf("the volume is on %s, a local filesystem: imports from it cost what they would from a local tree", fsys.Name)
}

// DefaultBudget is the local budget when none is given: the free space
// of the local directory's filesystem (of its nearest existing parent)
// less Reserve, and never negative.
func DefaultBudget(localDir string) (int64, error) {
	d := localDir
	for {
		if _, err := os.Stat(d); err == nil {
			break
		}
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	n, err := free(d)
	if err != nil {
		return 0, fmt.Errorf("local dir %s: %w", localDir, err)
	}
	return max(0, n-Reserve), nil
}
