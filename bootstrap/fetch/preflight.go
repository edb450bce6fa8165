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
	"sync"
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
		e.Dir, FormatSize(e.Need), FormatSize(e.Free), e.Source)
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
// dir's tree occupies, found by walking it (hard links counted once, 32
// operations in flight): O(files), run only before a download, never on
// the in-sync path. Otherwise it is statfs's figure for
// unprivileged users.
func FreeSpace(dir string, volumeSize int64) (free int64, source string, err error) {
	if volumeSize > 0 {
		used, err := diskUsage(dir)
		if err != nil {
			return 0, "", err
		}
		return max(volumeSize-used, 0), fmt.Sprintf("volume size %s less %s used", FormatSize(volumeSize), FormatSize(used)), nil
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

// diskUsage is the space dir's tree occupies, counting each hard-linked
// inode once (generations hard-link the store: counting per path would
// count torch once per generation). It keeps up to 32 directory reads and
// stats in flight, since on a network filesystem each is a round trip.
func diskUsage(dir string) (int64, error) {
	var (
		mu       sync.Mutex
		used     int64
		seen     = map[[2]uint64]bool{}
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, 32)
	fail := func(err error) {
		if errors.Is(err, fs.ErrNotExist) {
			return // removed while we walked
		}
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	add := func(fi fs.FileInfo) {
		st, ok := fi.Sys().(*syscall.Stat_t)
		mu.Lock()
		defer mu.Unlock()
		if !ok {
			used += fi.Size()
			return
		}
		if st.Nlink > 1 && !fi.IsDir() {
			k := [2]uint64{uint64(st.Dev), st.Ino}
			if seen[k] {
				return
			}
			seen[k] = true
		}
		used += st.Blocks * 512
	}
	var walk func(d string)
	walk = func(d string) {
		defer wg.Done()
		sem <- struct{}{}
		ents, err := os.ReadDir(d)
		if err != nil {
			<-sem
			fail(err)
			return
		}
		var subdirs []string
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				fail(err)
				continue
			}
			add(fi)
			if e.IsDir() {
				subdirs = append(subdirs, filepath.Join(d, e.Name()))
			}
		}
		<-sem
		for _, sd := range subdirs {
			wg.Add(1)
			go walk(sd)
		}
	}
	root, err := os.Lstat(dir)
	if err != nil {
		return 0, fmt.Errorf("measure usage of %s: %w", dir, err)
	}
	add(root)
	if root.IsDir() {
		wg.Add(1)
		go walk(dir)
		wg.Wait()
	}
	if firstErr != nil {
		return 0, fmt.Errorf("measure usage of %s: %w", dir, firstErr)
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
