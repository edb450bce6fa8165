package bootstrap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/wheel"
)

// verifyGeneration is status --verify's deep check of one generation, in
// two parts that share one pool of workers:
//
//   - the store: each package's entry is complete, and every file of it
//     has its RECORD size and hash (DriftStoreIncomplete, DriftCorrupt);
//   - the generation's own tree: every file the RECORD in the package's
//     dist-info there lists is present, a regular file, of the listed
//     size, and either the store's own object (the same inode, whose
//     content the first part checks) or of the listed hash; and the
//     interpreter link and pyvenv.cfg resolve (DriftGenerationFile). A
//     file deleted, replaced by another (a new inode, any size) or by a
//     directory or a link is found, naming the package and the file.
//
// Files a generation holds that no RECORD lists (a package installed by
// hand) are byHand's business.
func (c *Config) verifyGeneration(ctx context.Context, gen *Generation) []Drift {
	store := &wheel.Store{Dir: c.Paths.Store()}
	genDir := c.Paths.Env(gen.ID)
	var jobs []verifyJob
	var out []Drift
	shas := make([]string, len(gen.Packages))
	for i, p := range gen.Packages {
		shas[i] = p.SHA256
	}
	sps, _ := filepath.Glob(filepath.Join(genDir, "lib", "python*", "site-packages"))
	ents, errs := store.OpenAll(shas, nil)
	workers := max(c.Jobs, fileops.DefaultJobs(c.Paths.Store()))
	// Each package's tree is stat'ed by a goroutine of its own, a bounded
	// number at once (two stats per file: on MooseFS, done one package
	// after another, they took 15 s for 3,000 files); results are merged
	// in package order.
	type treeResult struct {
		jobs  []verifyJob
		drift []Drift
	}
	trees := make([]treeResult, len(gen.Packages))
	var tw sync.WaitGroup
	tsem := make(chan struct{}, workers)
	for i, p := range gen.Packages {
		e, err := ents[i], errs[i]
		if err != nil {
			out = append(out, Drift{Kind: DriftStoreIncomplete, Package: p.Name, Detail: fmt.Sprintf("store entry %s: %v", p.SHA256[:12], err)})
			continue
		}
		storeFile := map[string]string{}
		for _, f := range e.Files {
			sp := filepath.Join(e.Dir, filepath.FromSlash(f.Path))
			storeFile[f.Path] = sp
			if f.Hash != "" {
				jobs = append(jobs, verifyJob{pkg: p.Name, path: sp, f: f, kind: DriftCorrupt})
			}
		}
		if len(sps) != 1 {
			out = append(out, Drift{Kind: DriftGenerationFile, Package: p.Name, Detail: fmt.Sprintf("%s: no single lib/python*/site-packages (found %d)", genDir, len(sps))})
			continue
		}
		tw.Add(1)
		tsem <- struct{}{}
		go func() {
			defer tw.Done()
			defer func() { <-tsem }()
			trees[i].jobs, trees[i].drift = treeJobs(genDir, sps[0], p.Name, e, storeFile)
		}()
	}
	tw.Wait()
	for _, tr := range trees {
		jobs = append(jobs, tr.jobs...)
		out = append(out, tr.drift...)
	}
	out = append(out, skeletonDrift(genDir)...)

	var mu sync.Mutex
	var wg sync.WaitGroup
	ch := make(chan verifyJob)
	// File reads, like the store's and the builder's file operations, are
	// kept in flight as the filesystem wants (dozens on a network one:
	// MooseFS answers each open and read in a round trip); --jobs may ask
	// for more.
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				if ctx.Err() != nil {
					continue
				}
				if msg := j.check(); msg != "" {
					mu.Lock()
					out = append(out, Drift{Kind: j.kind, Package: j.pkg, Detail: msg})
					mu.Unlock()
				}
			}
		}()
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Detail < out[j].Detail })
	return out
}

// verifyJob is one file to check against its RECORD row.
type verifyJob struct {
	pkg  string
	path string
	f    wheel.File
	kind string
}

func (j verifyJob) check() string { return checkFile(j.path, j.f) }

// treeJobs reads the RECORD of package e's dist-info in the generation and
// checks at once what a stat can tell (present, a regular file, the store's
// own object or of the listed size); the hashes of files that are not the
// store's objects are left to the returned jobs.
func treeJobs(genDir, sitePackages, pkg string, e *wheel.Entry, storeFile map[string]string) ([]verifyJob, []Drift) {
	recPath := filepath.Join(sitePackages, e.DistInfo, "RECORD")
	data, err := os.ReadFile(recPath)
	if err != nil {
		return nil, []Drift{{Kind: DriftGenerationFile, Package: pkg, Detail: fmt.Sprintf("%s: %v", recPath, err)}}
	}
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		return nil, []Drift{{Kind: DriftGenerationFile, Package: pkg, Detail: fmt.Sprintf("%s: %v", recPath, err)}}
	}
	var jobs []verifyJob
	var out []Drift
	for _, row := range rows {
		if len(row) != 3 || row[1] == "" {
			continue // RECORD itself, bytecode
		}
		rel := row[0]
		size, err := strconv.ParseInt(row[2], 10, 64)
		if err != nil {
			out = append(out, Drift{Kind: DriftGenerationFile, Package: pkg, Detail: fmt.Sprintf("%s: size %q of %s", recPath, row[2], rel)})
			continue
		}
		path := filepath.Join(sitePackages, filepath.FromSlash(rel))
		if r, err := filepath.Rel(genDir, path); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
			out = append(out, Drift{Kind: DriftGenerationFile, Package: pkg, Detail: fmt.Sprintf("%s: %s leaves the generation", recPath, rel)})
			continue
		}
		fi, err := os.Lstat(path)
		switch {
		case err != nil:
			out = append(out, Drift{Kind: DriftGenerationFile, Package: pkg, Detail: fmt.Sprintf("%s: missing (%v)", path, errorText(err))})
			continue
		case !fi.Mode().IsRegular():
			out = append(out, Drift{Kind: DriftGenerationFile, Package: pkg, Detail: fmt.Sprintf("%s: a %s where RECORD lists a file", path, kindOf(fi.Mode()))})
			continue
		}
		if sp, ok := storeFile[rel]; ok {
			if sfi, err := os.Lstat(sp); err == nil && os.SameFile(fi, sfi) {
				continue // the store's own object: checked with the store
			}
		}
		if fi.Size() != size {
			out = append(out, Drift{Kind: DriftGenerationFile, Package: pkg, Detail: fmt.Sprintf("%s: size %d, RECORD says %d", path, fi.Size(), size)})
			continue
		}
		jobs = append(jobs, verifyJob{pkg: pkg, path: path, f: wheel.File{Path: rel, Hash: row[1], Size: size}, kind: DriftGenerationFile})
	}
	return jobs, out
}

// skeletonDrift checks the generation's own files that no package lists:
// the interpreter link (run starts the handler through it) and pyvenv.cfg.
func skeletonDrift(genDir string) []Drift {
	var out []Drift
	for _, name := range []string{filepath.Join("bin", "python"), "pyvenv.cfg"} {
		p := filepath.Join(genDir, name)
		fi, err := os.Stat(p)
		switch {
		case err != nil:
			out = append(out, Drift{Kind: DriftGenerationFile, Detail: fmt.Sprintf("%s: %s", p, errorText(err))})
		case !fi.Mode().IsRegular():
			out = append(out, Drift{Kind: DriftGenerationFile, Detail: fmt.Sprintf("%s: a %s, not a file", p, kindOf(fi.Mode()))})
		}
	}
	return out
}

// errorText is err without the path a PathError repeats.
func errorText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func kindOf(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	default:
		return "special file"
	}
}

// checkFile compares a file with its RECORD size and hash ("sha256=...").
func checkFile(path string, f wheel.File) string {
	alg, want, ok := strings.Cut(f.Hash, "=")
	if !ok || alg != "sha256" {
		return ""
	}
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("%s: %v", path, err)
	}
	defer fh.Close()
	h := sha256.New()
	n, err := io.Copy(h, fh)
	if err != nil {
		return fmt.Sprintf("%s: %v", path, err)
	}
	if n != f.Size {
		return fmt.Sprintf("%s: size %d, RECORD says %d", path, n, f.Size)
	}
	if got := base64.RawURLEncoding.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Sprintf("%s: sha256 differs from RECORD", path)
	}
	return ""
}
