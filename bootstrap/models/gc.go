package models

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// Keep names a repository and the commits of it that must stay: those of
// the manifest's models and of every generation a live lease names.
type Keep struct {
	RepoType string // "" means model
	Repo     string
	Commits  []string
}

// GCReport lists what GC removed (or, dry, would remove).
type GCReport struct {
	Snapshots []string // snapshot directories
	Refs      []string // ref files naming a commit that is not kept
	NoExist   []string // .no_exist/{commit} directories
	Blobs     []string // blobs no kept snapshot links to
	Bytes     int64    // size of those blobs
	// Leftovers are temporary names (atomicfile.TempName) of writers that
	// died between creating and renaming them.
	Leftovers []string
	// Unmanaged are repository folders of the cache that no Keep names;
	// GC leaves them alone (the handler may have put them there).
	Unmanaged []string
}

// GC removes, in each kept repository's folder, the snapshots, refs and
// .no_exist entries of commits that are not kept, then the blobs that no
// remaining snapshot links to. Part files of downloads in progress and
// temporary names are left alone. With dryRun it removes nothing and
// reports what it would remove.
//
// GC must run under the volume lock: a Sync running at the same time could
// link a blob GC has just judged unused. For the same reason every
// temporary name it finds in a kept repository's folder belongs to a dead
// writer, and it removes those too.
//
// A Keep without commits keeps nothing of its repository but the folder. It reads every link of the kept
// snapshots (O(files)); it is never on the boot path.
func GC(hubDir string, keep []Keep, dryRun bool) (GCReport, error) {
	var rep GCReport
	kept := map[string]map[string]bool{}
	for _, k := range keep {
		t := k.RepoType
		if t == "" {
			t = "model"
		}
		if err := checkRepoType(t); err != nil {
			return rep, err
		}
		if err := checkRepoID(k.Repo); err != nil {
			return rep, err
		}
		name := RepoDirName(t, k.Repo)
		if kept[name] == nil {
			kept[name] = map[string]bool{}
		}
		for _, c := range k.Commits {
			kept[name][c] = true
		}
	}
	ents, err := os.ReadDir(hubDir)
	if errors.Is(err, fs.ErrNotExist) {
		return rep, nil
	}
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	remove := func(p string, all bool) error {
		if dryRun {
			return nil
		}
		if all {
			return os.RemoveAll(p)
		}
		return os.Remove(p)
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !strings.Contains(e.Name(), "--") {
			continue
		}
		commits, ok := kept[e.Name()]
		if !ok {
			rep.Unmanaged = append(rep.Unmanaged, e.Name())
			continue
		}
		repoDir := filepath.Join(hubDir, e.Name())
		if err := gcRepo(repoDir, commits, remove, &rep); err != nil {
			errs = append(errs, fmt.Errorf("gc %s: %w", repoDir, err))
		}
	}
	return rep, errors.Join(errs...)
}

func gcRepo(repoDir string, commits map[string]bool, remove func(string, bool) error, rep *GCReport) error {
	var errs []error
	filepath.WalkDir(repoDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if _, tmp := atomicfile.ParseTempName(d.Name()); tmp && !d.IsDir() {
			rep.Leftovers = append(rep.Leftovers, p)
			if err := remove(p, false); err != nil {
				errs = append(errs, err)
			}
		}
		return nil
	})
	for _, sub := range []string{"snapshots", ".no_exist"} {
		ents, _ := os.ReadDir(filepath.Join(repoDir, sub))
		for _, e := range ents {
			if commits[e.Name()] {
				continue
			}
			p := filepath.Join(repoDir, sub, e.Name())
			if sub == "snapshots" {
				rep.Snapshots = append(rep.Snapshots, p)
			} else {
				rep.NoExist = append(rep.NoExist, p)
			}
			if err := remove(p, true); err != nil {
				errs = append(errs, err)
			}
		}
	}
	refsDir := filepath.Join(repoDir, "refs")
	filepath.WalkDir(refsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if _, tmp := atomicfile.ParseTempName(d.Name()); tmp {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && commits[strings.TrimSpace(string(b))] {
			return nil
		}
		rep.Refs = append(rep.Refs, p)
		if err := remove(p, false); err != nil {
			errs = append(errs, err)
		}
		return nil
	})

	used := map[string]bool{}
	for c := range commits {
		snap := filepath.Join(repoDir, "snapshots", c)
		err := filepath.WalkDir(snap, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && p == snap {
					return nil
				}
				return err
			}
			if d.Type()&fs.ModeSymlink != 0 {
				if t, err := os.Readlink(p); err == nil {
					used[path.Base(filepath.ToSlash(t))] = true
				}
			}
			return nil
		})
		if err != nil {
			// Without the full set of used blobs, removing any would be a
			// guess.
			return errors.Join(append(errs, fmt.Errorf("read snapshot %s: %w", snap, err))...)
		}
	}
	blobs, _ := os.ReadDir(filepath.Join(repoDir, "blobs"))
	var names []string
	for _, b := range blobs {
		n := b.Name()
		if used[n] || !b.Type().IsRegular() || strings.Contains(n, ".") {
			// Part files, resume records and temporary names all contain
			// a '.'; blob names never do (see checkETag).
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(repoDir, "blobs", n)
		if fi, err := os.Lstat(p); err == nil {
			rep.Bytes += fi.Size()
		}
		rep.Blobs = append(rep.Blobs, p)
		if err := remove(p, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
