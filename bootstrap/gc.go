package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/locallayout"
	"github.com/volboot/volboot/bootstrap/models"
	"github.com/volboot/volboot/bootstrap/trash"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
)

// GCItem is one thing gc removes (or, in a dry run, would remove).
type GCItem struct {
	Kind  string `json:"kind"` // generation, store-entry, download, partial-download, pack, leftover, model-blob, model-snapshot
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	Why   string `json:"why"`
}

// GCReport lists what gc removed and what it kept.
type GCReport struct {
	DryRun  bool     `json:"dry_run"`
	Kept    []string `json:"kept_generations"`
	Removed []GCItem `json:"removed"`
	Bytes   int64    `json:"bytes"`
	// Trash is what emptying the trash did, after the lock was released.
	Trash trash.Report `json:"trash"`
}

// GC removes, under the volume lock, every generation that is neither
// current, nor built from the current manifest and lock, nor named by a
// live use-lease; then store entries and downloads no kept generation
// needs, partial downloads the lock no longer wants, dead writers'
// leftovers, and model snapshots and blobs no kept generation uses. Each
// complete thing loses its marker before its content, so an interrupted gc
// leaves incomplete things, never things that look complete. dryRun takes
// no lock and removes nothing.
//
// Under the lock, each thing leaves its place with one rename into the
// trash (after a walk that sizes it for the report); the trash is emptied
// once the lock is released, so that boots waiting for the lock do not wait
// for the removal itself.
func GC(ctx context.Context, c Config, dryRun bool) (*GCReport, error) {
	c.defaults()
	r, err := c.gcUnderLock(ctx, dryRun)
	if err != nil || dryRun {
		return r, err
	}
	r.Trash, err = c.trash().Empty(ctx)
	if err != nil {
		return r, fmt.Errorf("empty the trash %s: %w", c.Paths.Trash(), err)
	}
	return r, nil
}

func (c *Config) gcUnderLock(ctx context.Context, dryRun bool) (*GCReport, error) {
	check := func() error { return nil }
	if !dryRun {
		lk, err := lockfile.Acquire(ctx, lockfile.Options{Dir: c.Paths.Volboot(), Logger: c.Logger, Mode: c.LockMode,
			WaitTimeout: c.LockTimeout, TTL: c.LockTTL, Phase: "garbage collecting"})
		if err != nil {
			return nil, fmt.Errorf("volume lock: %w", err)
		}
		defer lk.Release()
		check = lk.Check
	}
	st, err := ReadState(c.Paths.State())
	if err != nil {
		return nil, err
	}
	// Empty lists, not nil ones: gc --json prints [] for nothing removed.
	r := &GCReport{DryRun: dryRun, Kept: []string{}, Removed: []GCItem{}}
	var freed freedSpace
	can := c.trash()
	remove := func(kind, path, why, marker string) {
		size := freed.add(path)
		r.Removed = append(r.Removed, GCItem{Kind: kind, Path: path, Bytes: size, Why: why})
		r.Bytes += size
		if dryRun {
			return
		}
		// A tree leaves its name at once, into the trash: a gc killed
		// mid-removal must not leave a half-emptied entry there for every
		// later boot to trip over.
		fi, err := os.Lstat(path)
		switch {
		case err != nil:
		case fi.IsDir() || marker != "":
			if err := can.Put(path); err != nil {
				c.Logger.Warn("gc: could not move to the trash; removing in place", zap.String("path", path), zap.Error(err))
				if err := atomicfile.RemoveTree(path); err != nil {
					c.Logger.Warn("gc: remove", zap.String("path", path), zap.Error(err))
				}
			}
		default:
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				c.Logger.Warn("gc: remove", zap.String("path", path), zap.Error(err))
			}
		}
	}

	// Generations.
	keep := map[string]string{}
	if st.Current != "" {
		keep[st.Current] = "current"
	}
	for id, g := range st.Generations {
		if g.Manifest == c.Manifest.Digest && g.Lock == c.Lock.Digest {
			if _, ok := keep[id]; !ok {
				keep[id] = "built from the current manifest and lock"
			}
		}
	}
	if err := c.keepLeased(keep); err != nil {
		return nil, err
	}
	neededWheels := map[string]bool{}
	ents, _ := os.ReadDir(c.Paths.Envs())
	var doomed []string
	for _, e := range ents {
		if _, tmp := atomicfile.ParseTempName(e.Name()); tmp {
			continue // leftovers below
		}
		dir := c.Paths.Env(e.Name())
		if _, ok := keep[e.Name()]; ok {
			if m, err := venv.ReadMarker(dir); err == nil {
				for _, p := range m.Packages {
					neededWheels[p.SHA256] = true
				}
			}
			continue
		}
		doomed = append(doomed, e.Name())
	}
	if !dryRun {
		doomed, err = c.doomGenerations(ctx, check, doomed, keep, neededWheels)
		if err != nil {
			return nil, err
		}
	}
	for _, id := range doomed {
		remove("generation", c.Paths.Env(id), "not current, not from the current manifest and lock, no live lease", venv.CompleteName)
		if !dryRun {
			delete(st.Generations, id)
		}
	}
	neededSdists := map[string]bool{}
	for id, why := range keep {
		r.Kept = append(r.Kept, id+" ("+why+")")
		if g := st.Generations[id]; g != nil {
			for _, p := range g.Packages {
				neededWheels[p.SHA256] = true
				if p.Sdist != "" {
					neededSdists[p.Sdist] = true
				}
			}
		}
	}
	sort.Strings(r.Kept)

	// Store entries and downloads.
	ents, _ = os.ReadDir(c.Paths.Store())
	for _, e := range ents {
		if _, tmp := atomicfile.ParseTempName(e.Name()); tmp || neededWheels[e.Name()] {
			continue
		}
		remove("store-entry", filepath.Join(c.Paths.Store(), e.Name()), "no kept generation installs it", wheel.CompleteName)
	}
	lock, err := c.Lock.Parse()
	if err != nil {
		return nil, err
	}
	wanted := map[string]bool{}
	for _, p := range lock.Packages {
		for _, w := range p.Wheels {
			wanted[w.SHA256] = true
		}
	}
	ents, _ = os.ReadDir(c.Paths.Wheels())
	for _, e := range ents {
		name := e.Name()
		if _, tmp := atomicfile.ParseTempName(name); tmp {
			continue
		}
		sha, _, _ := strings.Cut(name, ".")
		switch {
		case strings.HasSuffix(name, ".whl") && !neededWheels[sha]:
			remove("download", filepath.Join(c.Paths.Wheels(), name), "no kept generation installs it", "")
		case (strings.HasSuffix(name, ".part") || strings.HasSuffix(name, ".part.json")) && !wanted[sha]:
			remove("partial-download", filepath.Join(c.Paths.Wheels(), name), "the lock no longer names this wheel", "")
		}
	}
	// Sdists: kept while a kept generation holds a wheel built from one
	// (a repair may need to build it again).
	wantedSdists := map[string]bool{}
	for _, p := range lock.Packages {
		if p.Sdist != nil {
			wantedSdists[p.Sdist.SHA256] = true
		}
	}
	ents, _ = os.ReadDir(c.Paths.Sdists())
	for _, e := range ents {
		name := e.Name()
		if _, tmp := atomicfile.ParseTempName(name); tmp {
			continue
		}
		sha, _, _ := strings.Cut(name, ".")
		switch partial := strings.HasSuffix(name, ".part") || strings.HasSuffix(name, ".part.json"); {
		case partial && !wantedSdists[sha]:
			remove("partial-download", filepath.Join(c.Paths.Sdists(), name), "the lock no longer names this sdist", "")
		case !partial && !neededSdists[sha]:
			remove("download", filepath.Join(c.Paths.Sdists(), name), "no kept generation holds a wheel built from it", "")
		}
	}

	// Packs of generations not kept.
	ents, _ = os.ReadDir(c.Paths.Packs())
	for _, e := range ents {
		id, sha, ok := locallayout.ParsePackName(e.Name())
		if !ok {
			continue // a temporary name: leftovers below
		}
		if _, kept := keep[id]; kept {
			if g := st.Generations[id]; g == nil || g.Pack == nil || g.Pack.SHA256 == sha {
				continue
			}
		}
		remove("pack", filepath.Join(c.Paths.Packs(), e.Name()), "no kept generation is laid out from it", "")
	}

	// Leftovers of dead writers, and staging directories of writers that
	// held the lock before this gc (see adoptable): gc makes room rather
	// than keep partial work for a sync to resume.
	gone := map[string]bool{}
	for _, d := range leftovers(c.Paths) {
		path, _, _ := strings.Cut(d.Detail, " (")
		remove("leftover", path, "a dead writer's temporary file", "")
		gone[path] = true
	}
	if !dryRun {
		for _, p := range c.stagingDirs(false) {
			if !gone[p] {
				remove("leftover", p, "a partial store entry, generation or pack of a previous lock holder", "")
			}
		}
	}

	// Models: keep the snapshots kept generations recorded.
	commits := map[string][]string{}
	for id := range keep {
		if g := st.Generations[id]; g != nil {
			for _, m := range g.Models {
				if m.Commit != "" {
					commits[m.Repo] = append(commits[m.Repo], m.Commit)
				}
			}
		}
	}
	// A repository with no recorded commit (its group failed, say) is left
	// alone: an empty Keep would drop everything already downloaded for it.
	var keeps []models.Keep
	for _, m := range c.Manifest.Models {
		if len(commits[m.Repo]) > 0 {
			keeps = append(keeps, models.Keep{RepoType: m.RepoType, Repo: m.Repo, Commits: commits[m.Repo]})
		}
	}
	if len(keeps) > 0 {
		mr, err := models.GC(c.Paths.Hub(), keeps, dryRun)
		if err != nil {
			return nil, fmt.Errorf("models gc: %w", err)
		}
		for _, p := range mr.Snapshots {
			r.Removed = append(r.Removed, GCItem{Kind: "model-snapshot", Path: p, Why: "no kept generation uses this commit"})
		}
		for _, p := range mr.Blobs {
			r.Removed = append(r.Removed, GCItem{Kind: "model-blob", Path: p, Why: "no kept snapshot links to it"})
		}
		r.Bytes += mr.Bytes
	}

	if !dryRun {
		for key, id := range st.Keys {
			if st.Generations[id] == nil {
				delete(st.Keys, key)
			}
		}
		smoke, _ := os.ReadDir(c.Paths.SmokeRecords())
		for _, e := range smoke {
			if _, kept := keep[e.Name()]; !kept && st.Generations[e.Name()] == nil {
				if err := can.Put(filepath.Join(c.Paths.SmokeRecords(), e.Name())); err != nil {
					c.Logger.Warn("gc: smoke records", zap.Error(err))
				}
			}
		}
		recs, _ := os.ReadDir(c.Paths.BootRecords())
		for _, e := range recs {
			path := filepath.Join(c.Paths.BootRecords(), e.Name())
			if g, err := readBootRecord(path); err != nil || st.Generations[g.ID] == nil {
				os.Remove(path)
			}
		}
		if err := st.Write(c.Paths.State()); err != nil {
			return nil, fmt.Errorf("record state: %w", err)
		}
	}
	return r, nil
}

// leaseGrace is how long gc waits, on a filesystem not known to be local,
// after taking the complete marker from the generations it is about to
// remove, before it lists the use-leases again: long enough for a lease
// written just before by another client to be listed through that client's
// and our directory caches (MooseFS keeps directory listings for a second
// by default).
const leaseGrace = 2 * time.Second

// keepLeased adds to keep every generation a live use-lease names.
func (c *Config) keepLeased(keep map[string]string) error {
	leases, err := lockfile.ListLeases(c.Paths.Volboot(), lockfile.ListOptions{})
	if err != nil {
		return fmt.Errorf("list use-leases: %w", err)
	}
	for _, l := range leases {
		if l.Live && l.Record != nil {
			keep[l.Record.Generation] = "used by live worker " + l.WorkerID
		}
	}
	return nil
}

// doomGenerations closes the race between gc and a worker that starts on a
// generation gc is about to remove. The worker (volboot run) chooses a
// complete generation, writes its use-lease, then reads the generation's
// marker again and runs it only if it is still there. gc renames the
// marker of every doomed generation to a temporary name beside it, waits
// leaseGrace, confirms it still holds the lock, and lists the leases
// again: a generation now leased gets its marker back and is kept (added
// to keep, its wheels to needed); the rest are returned for removal.
// Either the worker's second look comes before the marker is taken, and
// then its lease was written before it and gc sees it, or it comes after,
// and then the worker does not run that generation.
//
// The marker is renamed, not deleted, so that nothing is lost when gc dies
// holding it: a sync that finds a generation without its marker gives it
// back a dead writer's set-aside marker before judging it incomplete
// (restoreMarker). On any error every marker taken is given back.
func (c *Config) doomGenerations(ctx context.Context, check func() error, doomed []string, keep map[string]string, needed map[string]bool) ([]string, error) {
	aside := map[string]string{} // id -> the marker's temporary name
	giveBack := func(id string) error {
		if err := os.Rename(aside[id], filepath.Join(c.Paths.Env(id), venv.CompleteName)); err != nil {
			return fmt.Errorf("gc: give generation %s its marker back: %w", id, err)
		}
		delete(aside, id)
		return nil
	}
	giveAllBack := func(cause error) error {
		errs := []error{cause}
		for id := range aside {
			errs = append(errs, giveBack(id))
		}
		return errors.Join(errs...)
	}
	for _, id := range doomed {
		p := filepath.Join(c.Paths.Env(id), venv.CompleteName)
		tmp := atomicfile.TempName(p)
		if err := os.Rename(p, tmp); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // incomplete already: nobody can start on it
			}
			return nil, giveAllBack(fmt.Errorf("gc: take the marker of generation %s: %w", id, err))
		}
		aside[id] = tmp
	}
	if len(aside) == 0 {
		return doomed, nil
	}
	if !fileops.KnownLocal(c.Paths.Volboot()) {
		select {
		case <-ctx.Done():
		case <-time.After(leaseGrace):
		}
	}
	again := map[string]string{}
	err := ctx.Err()
	if err == nil {
		err = check()
	}
	if err == nil {
		err = c.keepLeased(again)
	}
	if err != nil {
		return nil, giveAllBack(fmt.Errorf("gc: before removing generations: %w", err))
	}
	var out []string
	var errs []error
	for _, id := range doomed {
		why, leased := again[id]
		if !leased {
			out = append(out, id)
			continue
		}
		// Leased meanwhile: give the marker back and keep it.
		if _, ok := aside[id]; ok {
			if err := giveBack(id); err != nil {
				errs = append(errs, err)
			}
		}
		keep[id] = why
		if m, merr := venv.ReadMarker(c.Paths.Env(id)); merr == nil {
			for _, p := range m.Packages {
				needed[p.SHA256] = true
			}
		}
	}
	if len(errs) > 0 {
		return nil, giveAllBack(errors.Join(errs...))
	}
	return out, nil
}

// freedSpace counts the bytes removals free. Generations hard-link their
// files to the store, so a file's bytes are freed only when every one of
// its links goes: each inode is counted once all its links were seen.
type freedSpace struct {
	links map[uint64]int // inode -> links seen among removed paths
	total int64
}

// add walks path and returns the bytes its removal frees, given what was
// added before.
func (f *freedSpace) add(path string) int64 {
	if f.links == nil {
		f.links = map[uint64]int{}
	}
	var n int64
	filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		sys, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			n += info.Size()
			return nil
		}
		f.links[sys.Ino]++
		if uint64(f.links[sys.Ino]) == uint64(sys.Nlink) {
			n += info.Size()
		}
		return nil
	})
	f.total += n
	return n
}
