package fetch

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// SpaceError is a refusal to start: the volume cannot hold what is needed.
type SpaceError struct {
	Dir        string
	Need, Free int64
	// Source says how Free was measured: "statfs" or "volume size".
	Source string
}

func (e *SpaceError) Error() string {
	return fmt.Sprintf("not enough space on %s: need %s more, %s free (%s); free space or raise --volume-size / VOLBOOT_VOLUME_SIZE if the volume is larger",
		e.Dir, humanBytes(e.Need), humanBytes(e.Free), e.Source)
}

// BytesNeeded is what still has to land on disk: for every item whose Dest
// does not exist, its size less the bytes its part file already holds, plus
// unpackEstimate (the caller's estimate of unpacked size). Items of unknown
// size count as zero. It stats two files per item and reads nothing.
func BytesNeeded(items []Item, unpackEstimate int64) int64 {
	need := max(unpackEstimate, 0)
	for i := range items {
		it := &items[i]
		if it.Size <= 0 {
			continue
		}
		if _, err := os.Stat(it.Dest); err == nil {
			continue
		}
		rem := it.Size
		if fi, err := os.Stat(it.partPath()); err == nil && fi.Size() <= it.Size {
			rem -= fi.Size()
		}
		need += rem
	}
	return need
}

// FreeSpace reports the bytes available under dir. With volumeSize > 0
// (--volume-size / VOLBOOT_VOLUME_SIZE, for filesystems such as RunPod's
// whose statfs reports the whole cluster) it is volumeSize less the space
// dir's tree occupies, found by walking it: O(files), run only before a
// download, never on the in-sync path. Otherwise it is statfs's figure for
// unprivileged users.
func FreeSpace(dir string, volumeSize int64) (free int64, source string, err error) {
	if volumeSize > 0 {
		used, err := diskUsage(dir)
		if err != nil {
			return 0, "", err
		}
		return max(volumeSize-used, 0), fmt.Sprintf("volume size %s less %s used", humanBytes(volumeSize), humanBytes(used)), nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, "", fmt.Errorf("statfs %s: %w", dir, err)
	}
	avail := uint64(st.Bavail) * uint64(st.Bsize)
	if avail > math.MaxInt64 {
		avail = math.MaxInt64
	}
	return int64(avail), "statfs", nil
}

func diskUsage(dir string) (int64, error) {
	var used int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			used += st.Blocks * 512
		} else {
			used += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measure usage of %s: %w", dir, err)
	}
	return used, nil
}

// Preflight refuses early, with a *SpaceError, when BytesNeeded(items,
// unpackEstimate) exceeds FreeSpace(dir, volumeSize).
func Preflight(items []Item, unpackEstimate int64, dir string, volumeSize int64) error {
	need := BytesNeeded(items, unpackEstimate)
	free, source, err := FreeSpace(dir, volumeSize)
	if err != nil {
		return err
	}
	if need > free {
		return &SpaceError{Dir: dir, Need: need, Free: free, Source: source}
	}
	return nil
}

// ParseSize parses a byte count such as "50G", "50GB", "50GiB", "1.5T" or
// "1048576". K, M, G, T and P are powers of 1024 with or without "B"/"iB"
// (volume quotas are sold in GiB whatever they are called); case is ignored.
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := 1.0
	if t != "" {
		if i := strings.IndexByte("KMGTP", t[len(t)-1]); i >= 0 {
			mult = math.Pow(1024, float64(i+1))
			t = t[:len(t)-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) || v*mult >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional K, M, G, T or P suffix, e.g. 50G", s)
	}
	return int64(v * mult), nil
}
