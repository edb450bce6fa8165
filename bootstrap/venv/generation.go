package venv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/trash"
	"github.com/volboot/volboot/bootstrap/wheel"
)

// CompleteName marks a generation complete; it is written last, inside the
// temporary directory, before the directory is renamed into place.
const CompleteName = ".complete"

// GenerationSchema is the version of the generation format (layout,
// launchers, marker), recorded in the marker. Generation ids do not carry
// it: they hash bootstrap.FormatVersion, which must be raised with it.
const GenerationSchema = 1

// Installer is what INSTALLER says in every dist-info volboot writes.
const Installer = "volboot"

// LinkMode says how store files enter a generation.
type LinkMode int

const (
	// Hardlink links every file to the store, copying only where the
	// filesystem refuses (EXDEV, EPERM, EMLINK, ENOTSUP).
	Hardlink LinkMode = iota
	// Copy copies every file.
	Copy
)

// Package is one store entry to install in a generation.
type Package struct {
	Entry *wheel.Entry
	// Requested marks a top-level requirement (REQUESTED is written).
	Requested bool
	// Pending, when Entry is nil, waits for the package's store entry
	// (being downloaded or unpacked). Build links every package that is
	// ready meanwhile and claims pending ones after them; an error from
	// Pending fails the build.
	Pending func() (*wheel.Entry, error)
}

// Builder builds generations. Its fields are read-only during Build; one
// Builder may build several generations concurrently.
type Builder struct {
	Python *interp.Info
	// Jobs is how many file operations are kept in flight when Ops is
	// nil. Default: fileops.DefaultJobs of the directory the generation
	// is built in.
	Jobs int
	// Ops schedules the build's file operations (one per directory
	// batch); a sync shares one with the store. Nil: a scheduler of Jobs.
	Ops  *fileops.Scheduler
	Mode LinkMode
	// Creator is written to pyvenv.cfg (e.g. "volboot 0.3.0").
	Creator string
	Logger  *zap.Logger
	// Sync is the durability mode (default wheel.SyncAuto, resolved for
	// the directory the generation is built in).
	Sync wheel.SyncMode
	// Replace builds the generation even when a complete one is at dir
	// (repair found it damaged) and swaps the new one in; see replace.
	Replace bool
	// Trash receives the trees Build gives up (a failed build, the tree a
	// replacement displaced); nil removes them at once.
	Trash *trash.Can
	// Adopt, when set, is asked about each partial build of the same
	// generation another builder left; one it allows is completed rather
	// than built anew (see resume.go). Not with Replace.
	Adopt func(atomicfile.TempInfo, fs.DirEntry) bool
}

// replace puts the complete generation at tmp in place of the one at dir.
// A handler may be running from dir, resolving paths in it as it imports
// lazily, so no path it could find may go missing: the two trees are
// exchanged in one step (renameat2 RENAME_EXCHANGE), or, where the
// filesystem cannot exchange (FUSE, MooseFS among them, answers EINVAL),
// the rebuilt tree is merged into the old one file by file (mergeInto).
// Either way every lookup finds the old file or the new one, and files
// the handler has open stay valid. What is left of the other tree is then
// removed.
func (b *Builder) replace(tmp, dir string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE); err != nil {
		b.logger().Info("cannot exchange generations here; merging the rebuilt one into the old file by file", zap.String("dir", dir), zap.Error(err))
		if err := mergeInto(tmp, dir); err != nil {
			return fmt.Errorf("merge the rebuilt generation into %s: %w", dir, err)
		}
	}
	b.Trash.Discard(tmp)
	return nil
}

// mergeInto makes dst hold src's tree: every file or link of src that is
// not already the same file at its path in dst is renamed over that path
// (one atomic rename each: a reader sees the old file or the new, never
// nothing), directories dst lacks are made, and a path of the wrong kind
// in dst (a directory where a file belongs, or the reverse) is removed
// first; only such damaged paths, and those already missing, can be seen
// absent. Files of dst that src lacks stay. Renames go parents first, so
// the marker, a file of the top directory, is among the first: it says
// complete for content that is the same generation's by construction.
func mergeInto(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		target := filepath.Join(dst, rel)
		ti, terr := os.Lstat(target)
		if d.IsDir() {
			if terr == nil && ti.IsDir() {
				return nil
			}
			if terr == nil {
				if err := os.Remove(target); err != nil {
					return err
				}
			}
			si, err := d.Info()
			if err != nil {
				return err
			}
			return os.Mkdir(target, si.Mode().Perm())
		}
		if terr == nil {
			if ti.IsDir() {
				if err := os.RemoveAll(target); err != nil {
					return err
				}
			} else if si, err := os.Lstat(p); err == nil && os.SameFile(si, ti) {
				return nil
			}
		}
		return os.Rename(p, target)
	})
}

// Marker is the content of a generation's .complete file.
type Marker struct {
	Schema      int           `json:"schema"`
	Interpreter string        `json:"interpreter"`
	Packages    []MarkerEntry `json:"packages"`
	Files       int           `json:"files"`
	Copied      int           `json:"copied"` // files copied because a link was refused
}

// MarkerEntry names one installed wheel.
type MarkerEntry struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	SHA256    string `json:"sha256"`
	Requested bool   `json:"requested,omitempty"`
}

// ReadMarker reads a generation's marker; it fails (wrapping
// fs.ErrNotExist) for a generation that is absent or incomplete.
func ReadMarker(dir string) (*Marker, error) {
	b, err := os.ReadFile(filepath.Join(dir, CompleteName))
	if err != nil {
		return nil, fmt.Errorf("generation %s: %w", dir, err)
	}
	var m Marker
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("generation %s: marker: %w", dir, err)
	}
	return &m, nil
}

// opKind is how one file of a generation is made.
type opKind int

const (
	opLink  opKind = iota // link (or copy) a store file
	opCopy                // copy a store file (dist-info: per generation)
	opWrite               // write generated bytes
)

type op struct {
	kind opKind
	src  string // store path for opLink/opCopy
	data []byte // for opWrite
	exec bool
	dst  string // relative to the generation root, '/'-separated
	pkg  int    // index into pkgs; -1 for the skeleton
	hash string // RECORD hash ("" for bytecode)
	size int64
}

// conflictError names both wheels that provide one path.
func conflictError(dst string, a, b string) error {
	return fmt.Errorf("%s and %s both provide %s with different contents", a, b, dst)
}

// Build builds generation dir (e.g. <volume>/.volboot/envs/<id>) from pkgs.
// If dir already holds a complete generation it is returned as is (ids name
// content, so it is the same generation). Otherwise the generation is
// assembled in a temporary directory beside dir, its marker written last,
// and renamed into place; on error nothing appears under dir.
//
// Errors name the wheels involved: two wheels providing one path with
// different bytes, a wheel overwriting the environment's own files, a
// script name two wheels define differently.
func (b *Builder) Build(ctx context.Context, dir string, pkgs []Package) (*Marker, error) {
	if m, err := ReadMarker(dir); err == nil && !b.Replace {
		return m, nil
	}
	if b.Python == nil {
		return nil, errors.New("venv: Builder.Python is nil")
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
	}
	tmp := atomicfile.TempName(dir + wheel.PartialSuffix)
	resumed := !b.Replace && b.takePartial(dir, tmp)
	if !resumed {
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return nil, fmt.Errorf("create generation directory: %w", err)
		}
	}
	ok := false
	defer func() {
		// Cancelled or fenced: what is built stays for the next builder
		// of this id to complete (resume.go). Anything else failed for
		// good.
		if !ok && ctx.Err() == nil {
			b.Trash.Discard(tmp)
		}
	}()
	l, err := WriteSkeleton(tmp, b.Python, "", b.Creator)
	if err != nil {
		return nil, fmt.Errorf("generation %s: %w", dir, err)
	}
	sched := b.Ops
	if sched == nil {
		jobs := b.Jobs
		if jobs <= 0 {
			jobs = fileops.DefaultJobs(filepath.Dir(dir))
		}
		sched = fileops.New(jobs, 1)
	}
	mode := b.Sync.Resolve(filepath.Dir(dir))
	listed := fileops.FilesystemOf(filepath.Dir(dir)).ListingAnswersLookups
	// Files are made while the plan is still being claimed: each package's
	// directories go to the workers as soon as its paths are claimed, and
	// each worker makes its directory (and missing parents) first.
	start := time.Now()
	var copied, kept atomic.Int64
	// entries[i] is package i's store entry; plan fills in pending ones
	// before it hands out any of their files.
	entries := make([]*wheel.Entry, len(pkgs))
	for i, p := range pkgs {
		entries[i] = p.Entry
	}
	fail := func(o *op, err error) error {
		who := "the environment"
		if o.pkg >= 0 {
			who = entries[o.pkg].Filename
		}
		return fmt.Errorf("generation %s: %s: %s: %w", filepath.Base(dir), who, o.dst, err)
	}
	mk := &dirMaker{root: tmp, made: map[string]*dirOnce{}, resumed: resumed}
	// A resumed build whose previous builder made every file already
	// (resume.go, filledName) only plans, to learn the directories to
	// sync and the marker's counts.
	filled := false
	if resumed && mode.PerFile() {
		if n, ok := readFilled(tmp); ok {
			filled = true
			copied.Store(int64(n))
		}
	}
	// Under --durability files, finished batches are logged, and a
	// resumed build skips the ones its predecessor logged (batchlog.go).
	var logged map[string]loggedBatch
	var blog *batchLog
	if mode.PerFile() && !filled {
		if resumed {
			logged = readBatchLog(tmp)
		}
		blog = openBatchLog(tmp, b.logger())
		defer blog.close()
	}
	var skipped atomic.Int64
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	g := sched.Group(wctx)
	gctx := g.Context()
	var plannedDirs sync.Map
	emit := func(batch []*op) error {
		if err := gctx.Err(); err != nil {
			return err
		}
		if filled {
			plannedDirs.Store(parentDir(batch[0].dst), true)
			return nil
		}
		if lb, ok := logged[batch[0].dst]; ok && lb.matches(batch) {
			plannedDirs.Store(parentDir(batch[0].dst), true)
			kept.Add(int64(len(batch)))
			copied.Add(int64(lb.copied))
			skipped.Add(int64(len(batch)))
			return nil
		}
		d := parentDir(batch[0].dst)
		g.Go(d, func() error {
			if err := mk.ensure(d); err != nil {
				return fail(batch[0], fmt.Errorf("create its directory: %w", err))
			}
			c, k, o, err := b.fillDir(tmp, batch, mode, resumed, listed, mk.listing(d), &mk.inodes)
			copied.Add(int64(c))
			kept.Add(int64(k))
			if err != nil {
				return fail(o, err)
			}
			blog.done(batch, c)
			return nil
		})
		return nil
	}
	ops, perr := b.plan(l, pkgs, entries, emit)
	planned := time.Now()
	if perr != nil {
		stop() // the plan is invalid: the workers' files will be removed
	}
	werr := g.Wait()
	switch {
	case werr != nil && (perr == nil || gctx.Err() != nil && errors.Is(perr, gctx.Err())):
		return nil, werr // the plan stopped because a worker failed
	case perr != nil:
		return nil, fmt.Errorf("generation %s: %w", filepath.Base(dir), perr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dirs := mk.dirs()
	// Directories of batches not made here (filled, or logged as done)
	// are synced all the same.
	plannedDirs.Range(func(k, _ any) bool {
		for d := k.(string); d != "." && !dirs[d]; d = parentDir(d) {
			dirs[d] = true
		}
		return true
	})
	switch {
	case filled:
		b.logger().Info(fmt.Sprintf("generation %s: all %d files were made by a previous worker, whose record says so; syncing and marking it complete", filepath.Base(dir), len(ops)),
			zap.String("generation", filepath.Base(dir)), zap.Int("files", len(ops)))
	case resumed:
		b.logger().Info(fmt.Sprintf("generation %s: %d of %d files were present from a previous worker's partial build (%d of them in batches its log says were finished, not checked again)", filepath.Base(dir), kept.Load(), len(ops), skipped.Load()),
			zap.String("generation", filepath.Base(dir)), zap.Int64("present", kept.Load()), zap.Int("files", len(ops)), zap.Int64("logged", skipped.Load()))
	}
	if mode.PerFile() && !filled {
		recordFilled(tmp, int(copied.Load()), b.logger())
	}
	m := &Marker{Schema: GenerationSchema, Interpreter: b.Python.Identity(), Files: len(ops), Copied: int(copied.Load())}
	for i, p := range pkgs {
		e := entries[i]
		m.Packages = append(m.Packages, MarkerEntry{Name: e.Name, Version: e.Version, SHA256: e.SHA256, Requested: p.Requested})
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	linked := time.Now()
	if err := b.syncGeneration(ctx, tmp, l, dirs, sched, mode); err != nil {
		return nil, fmt.Errorf("generation %s: %w", filepath.Base(dir), err)
	}
	for _, name := range []string{filledName, batchLogName} {
		if err := os.Remove(filepath.Join(tmp, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("generation %s: %w", filepath.Base(dir), err)
		}
	}
	if err := atomicfile.Write(filepath.Join(tmp, CompleteName), mb, 0o644); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(dir); err == nil && b.Replace {
		if err := b.replace(tmp, dir); err != nil {
			return nil, err
		}
	} else if err := os.Rename(tmp, dir); err != nil {
		// A racing builder of the same id may have won; its result is ours.
		if m2, err2 := ReadMarker(dir); err2 == nil {
			return m2, nil
		}
		return nil, fmt.Errorf("rename generation into %s: %w", dir, err)
	}
	ok = true
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	b.logger().Debug("built generation", zap.String("dir", dir), zap.Int("packages", len(pkgs)),
		zap.Int("files", len(ops)), zap.Int64("copied", copied.Load()), zap.Duration("plan", planned.Sub(start)), zap.Duration("link", linked.Sub(start)),
		zap.Duration("sync", time.Since(linked)))
	return m, nil
}

func (b *Builder) logger() *zap.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return zap.NewNop()
}

// destination maps a store file to its place in the generation, relative to
// the root. ok is false for files a generation does not take from the store
// (the wheel's RECORD and the files volboot rewrites).
func destination(l Layout, e *wheel.Entry, p string) (dst string, kind string, ok bool) {
	// Store paths passed the wheel's name checks (no empty, "." or ".."
	// element), so joining by hand gives a clean path; path.Join would
	// clean each of a large stack's 100k paths again.
	sp := filepath.ToSlash(l.SitePackages)
	if rest, in := strings.CutPrefix(p, e.DistInfo+"/"); in {
		switch rest {
		case "RECORD", "INSTALLER", "REQUESTED", "direct_url.json":
			return "", "", false
		}
		return sp + "/" + p, "dist-info", true
	}
	if e.Data != "" {
		if rest, in := strings.CutPrefix(p, e.Data+"/"); in {
			cat, sub, _ := strings.Cut(rest, "/")
			switch cat {
			case "purelib", "platlib":
				return path.Join(sp, sub), cat, true
			case "scripts":
				return path.Join(filepath.ToSlash(l.Scripts), sub), cat, true
			case "headers":
				return path.Join(filepath.ToSlash(l.Headers), e.Name, sub), cat, true
			case "data":
				return path.Join(filepath.ToSlash(l.Data), sub), cat, true
			}
			return "", "", false
		}
	}
	return sp + "/" + p, "root", true
}

// plan decides every file of the generation and who provides it. Each
// package's files, scripts and RECORD are worked out in parallel (they
// depend on that package alone); claiming paths, which finds conflicts
// between packages, runs one package at a time: the packages that are
// ready, in order, then the pending ones as Pending returns their entries
// (written to entries), so that a first install links each package while
// the rest still unpack. Which of two packages shipping the same bytes at
// one path provides it may therefore depend on timing, as it already did
// on which packages the store held; what the generation holds does not,
// and every conflict is refused whatever the order. Each package's newly
// claimed files go to emit as soon as they are claimed, in batches of one
// directory. An error from plan means the generation is invalid even if
// some batches were emitted.
func (b *Builder) plan(l Layout, pkgs []Package, entries []*wheel.Entry, emit func([]*op) error) ([]*op, error) {
	who := func(i int) string {
		if i < 0 {
			return "the environment"
		}
		return entries[i].Filename
	}
	var order, pending []int
	total := 0
	for i, p := range pkgs {
		switch {
		case p.Entry != nil:
			order = append(order, i)
			total += len(p.Entry.Files) + len(p.Entry.EntryPoints) + 3
		case p.Pending != nil:
			pending = append(pending, i)
		default:
			return nil, fmt.Errorf("package %d has no store entry", i)
		}
	}

	perPkg := make([][]op, len(pkgs))
	errs := make([]error, len(pkgs))
	done := make([]chan struct{}, len(pkgs))
	for i := range done {
		done[i] = make(chan struct{})
	}
	// The ready packages are claimed in order, then each pending one as
	// arrivals delivers it. One waiter per pending package; the waiters,
	// the launcher and their workers are all waited for before plan
	// returns (a Pending returns once its fetch is settled), and an early
	// return stops new work.
	arrivals := make(chan int, len(pending))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	var starters sync.WaitGroup
	var stop atomic.Bool
	start := func(i int) {
		if stop.Load() {
			errs[i] = errors.New("planning stopped")
			close(done[i])
			return
		}
		g.Go(func() error {
			defer close(done[i])
			perPkg[i], errs[i] = b.packageOps(l, Package{Entry: entries[i], Requested: pkgs[i].Requested}, i)
			return nil
		})
	}
	starters.Add(1)
	go func() {
		defer starters.Done()
		for _, i := range order {
			start(i)
		}
	}()
	for _, i := range pending {
		starters.Add(1)
		go func() {
			defer starters.Done()
			e, err := pkgs[i].Pending()
			if err == nil && e == nil {
				err = errors.New("no store entry")
			}
			if err != nil {
				errs[i] = fmt.Errorf("package %d: %w", i, err)
				close(done[i])
			} else {
				entries[i] = e
				start(i)
			}
			arrivals <- i
		}()
	}
	defer func() {
		stop.Store(true)
		starters.Wait()
		g.Wait()
	}()

	skeleton := map[string]bool{}
	for _, s := range SkeletonFiles(l, b.Python) {
		skeleton[s] = true
	}
	claimed := make(map[string]*op, total)
	// inside maps each directory of the generation to the first file
	// claimed below it: a path cannot be both a file and a directory, and
	// that is settled here, before any of the package's files is made.
	inside := map[string]*op{}
	ops := make([]*op, 0, total)
	names := map[string]int{}
	for n := range pkgs {
		i := 0
		if n < len(order) {
			i = order[n]
		} else {
			i = <-arrivals
		}
		<-done[i]
		if errs[i] != nil {
			return nil, errs[i]
		}
		e := entries[i]
		if prev, dup := names[normalize(e.Name)]; dup {
			return nil, fmt.Errorf("%s and %s are both distribution %s", who(prev), who(i), e.Name)
		}
		names[normalize(e.Name)] = i
		if e.CacheTag != "" && e.CacheTag != b.Python.CacheTag {
			// The store compiled this entry for another interpreter sharing
			// the volume; it still works, compiling at import time.
			b.logger().Warn("store entry has bytecode for another interpreter", zap.String("wheel", e.Filename),
				zap.String("has", e.CacheTag), zap.String("want", b.Python.CacheTag))
		}
		fresh := len(ops)
		for k := range perPkg[i] {
			o := &perPkg[i][k]
			if skeleton[o.dst] || o.dst == CompleteName {
				return nil, fmt.Errorf("%s would overwrite the environment's own %s", who(o.pkg), o.dst)
			}
			if prev, dup := claimed[o.dst]; dup {
				if strings.Contains(o.dst, "/__pycache__/") && strings.HasSuffix(o.dst, ".pyc") {
					continue // derived from a source whose own conflict check ran; first wins
				}
				same, err := sameContent(prev, o)
				if err != nil {
					return nil, fmt.Errorf("compare %s from %s and %s: %w", o.dst, who(prev.pkg), who(o.pkg), err)
				}
				if !same {
					return nil, conflictError(o.dst, who(prev.pkg), who(o.pkg))
				}
				continue
			}
			if q, ok := inside[o.dst]; ok {
				return nil, fmt.Errorf("%s provides file %s, but %s puts %s inside it", who(o.pkg), o.dst, who(q.pkg), q.dst)
			}
			// Parents are walked up to the first one already known to be
			// a directory (its own parents were checked when it was).
			for d := parentDir(o.dst); d != "."; d = parentDir(d) {
				if _, ok := inside[d]; ok {
					break
				}
				if f, ok := claimed[d]; ok {
					return nil, fmt.Errorf("%s provides file %s, but %s puts %s inside it", who(f.pkg), d, who(o.pkg), o.dst)
				}
				inside[d] = o
			}
			claimed[o.dst] = o
			ops = append(ops, o)
		}
		for _, batch := range batches(ops[fresh:]) {
			if err := emit(batch); err != nil {
				return nil, err
			}
		}
	}
	return ops, nil
}

// packageOps lists the files package i puts in the generation: its store
// files, its rewritten .data scripts, launchers for its entry points,
// INSTALLER, REQUESTED, and last a RECORD listing all of them (paths
// relative to site-packages, sorted, as pip writes it).
func (b *Builder) packageOps(l Layout, p Package, i int) ([]op, error) {
	e := p.Entry
	sp := filepath.ToSlash(l.SitePackages)
	ops := make([]op, 0, len(e.Files)+len(e.EntryPoints)+3)
	for _, f := range e.Files {
		dst, kind, ok := destination(l, e, f.Path)
		if !ok {
			continue
		}
		src := e.Dir + string(filepath.Separator) + filepath.FromSlash(f.Path)
		o := op{kind: opLink, src: src, dst: dst, pkg: i, hash: f.Hash, size: f.Size, exec: f.Exec}
		switch kind {
		case "dist-info":
			o.kind = opCopy
		case "scripts":
			if data, ok, err := rewriteScript(src); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", e.Filename, f.Path, err)
			} else if ok {
				o.kind, o.data, o.exec = opWrite, data, true
				o.hash, o.size = recordHash(data), int64(len(data))
			}
		}
		ops = append(ops, o)
	}
	for _, ep := range scriptsFor(e.EntryPoints, b.Python.Major, b.Python.Minor) {
		data := launcher(ep)
		ops = append(ops, op{kind: opWrite, data: data, exec: true, dst: path.Join(filepath.ToSlash(l.Scripts), ep.Name), pkg: i,
			hash: recordHash(data), size: int64(len(data))})
	}
	meta := []op{{kind: opWrite, data: []byte(Installer + "\n"), dst: path.Join(sp, e.DistInfo, "INSTALLER"), pkg: i}}
	if p.Requested {
		meta = append(meta, op{kind: opWrite, data: []byte{}, dst: path.Join(sp, e.DistInfo, "REQUESTED"), pkg: i})
	}
	for _, o := range meta {
		o.hash, o.size = recordHash(o.data), int64(len(o.data))
		ops = append(ops, o)
	}

	rows := make([]string, 0, len(ops)+1)
	for _, o := range ops {
		rel, in := strings.CutPrefix(o.dst, sp+"/")
		if !in { // scripts, headers, data: outside site-packages
			r, err := filepath.Rel(sp, o.dst)
			if err != nil {
				return nil, err
			}
			rel = filepath.ToSlash(r)
		}
		if o.hash == "" {
			rows = append(rows, csvField(rel)+",,\n")
		} else {
			rows = append(rows, csvField(rel)+","+csvField(o.hash)+","+strconv.FormatInt(o.size, 10)+"\n")
		}
	}
	rows = append(rows, csvField(e.DistInfo+"/RECORD")+",,\n")
	sort.Strings(rows)
	var rec bytes.Buffer
	for _, r := range rows {
		rec.WriteString(r)
	}
	return append(ops, op{kind: opWrite, data: rec.Bytes(), dst: path.Join(sp, e.DistInfo, "RECORD"), pkg: i}), nil
}

// parentDir is path.Dir for the clean relative paths of a plan, without
// cleaning them again.
func parentDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "."
	}
	return p[:i]
}

func normalize(name string) string {
	return strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(name))
}

// csvField quotes a RECORD field the way Python's csv module does.
func csvField(f string) string {
	if strings.ContainsAny(f, ",\"\n\r") {
		return `"` + strings.ReplaceAll(f, `"`, `""`) + `"`
	}
	return f
}

func recordHash(data []byte) string {
	s := sha256.Sum256(data)
	return wheel.EncodeDigest("sha256", s[:])
}

// sameContent reports whether two claims on one path carry equal bytes.
func sameContent(a, b *op) (bool, error) {
	if a.hash != "" && a.hash == b.hash && a.size == b.size {
		return true, nil
	}
	ad, err := opBytes(a)
	if err != nil {
		return false, err
	}
	bd, err := opBytes(b)
	if err != nil {
		return false, err
	}
	return bytes.Equal(ad, bd), nil
}

func opBytes(o *op) ([]byte, error) {
	if o.kind == opWrite {
		return o.data, nil
	}
	return os.ReadFile(o.src)
}

// pythonShebang matches the first line pip rewrites in .data/scripts.
var pythonShebang = []byte("#!python")

// rewriteScript returns a script whose "#!python" or "#!pythonw" line is
// replaced by the relocatable launcher header, keeping any interpreter
// arguments; ok is false when the script has no such line (it is then
// linked unchanged, like pip copies it).
func rewriteScript(src string) ([]byte, bool, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	head := make([]byte, len(pythonShebang))
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, pythonShebang) {
		return nil, false, nil
	}
	rest, err := io.ReadAll(f)
	if err != nil {
		return nil, false, err
	}
	line, body, _ := bytes.Cut(rest, []byte("\n"))
	line = bytes.TrimRight(line, "\r")
	line = bytes.TrimPrefix(line, []byte("w")) // pythonw: no console on Linux either way
	args := strings.Fields(string(line))
	return append(launcherHeader(args), body...), true, nil
}

// launcherHeader is a sh/Python polyglot: sh runs the exec line, which
// starts the python beside the script (after resolving links to the
// script) on the script itself; Python reads the same line as a string
// literal and goes on to the code below.
func launcherHeader(args []string) []byte {
	var a string
	for _, x := range args {
		a += " " + shQuote(x)
	}
	return []byte("#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")/python\"" + a + " \"$0\" \"$@\"\n' '''\n")
}

// launcher is a console or GUI script for an entry point, shaped like
// pip's, behind the relocatable header.
func launcher(ep wheel.EntryPoint) []byte {
	var b bytes.Buffer
	b.Write(launcherHeader(nil))
	b.WriteString("# -*- coding: utf-8 -*-\nimport re\nimport sys\n")
	call := ""
	if ep.Attr == "" {
		fmt.Fprintf(&b, "import %s as _entry\n", ep.Module)
		call = "_entry()"
	} else {
		top, _, _ := strings.Cut(ep.Attr, ".")
		fmt.Fprintf(&b, "from %s import %s\n", ep.Module, top)
		call = ep.Attr + "()"
	}
	fmt.Fprintf(&b, "if __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit(%s)\n", call)
	return b.Bytes()
}

var (
	pipScriptRE         = regexp.MustCompile(`^pip(\d+(\.\d+)?)?$`)
	easyInstallScriptRE = regexp.MustCompile(`^easy_install(-\d+\.\d+)?$`)
)

// scriptsFor returns the scripts to generate for a wheel's entry points.
// Like pip, it replaces the versioned pip and easy_install scripts a wheel
// names (for the Python that built it) with ones for the target
// interpreter: pip, pipX, pipX.Y and easy_install, easy_install-X.Y.
func scriptsFor(eps []wheel.EntryPoint, major, minor int) []wheel.EntryPoint {
	var pip, easy *wheel.EntryPoint
	var out []wheel.EntryPoint
	for _, ep := range eps {
		switch {
		case !ep.GUI && ep.Name == "pip":
			pip = &ep
		case !ep.GUI && ep.Name == "easy_install":
			easy = &ep
		}
	}
	for _, ep := range eps {
		if ep.GUI {
			out = append(out, ep)
			continue
		}
		if pip != nil && pipScriptRE.MatchString(ep.Name) || easy != nil && easyInstallScriptRE.MatchString(ep.Name) {
			continue
		}
		out = append(out, ep)
	}
	with := func(ep wheel.EntryPoint, name string) wheel.EntryPoint { ep.Name = name; return ep }
	if pip != nil {
		out = append(out, with(*pip, "pip"), with(*pip, fmt.Sprintf("pip%d", major)), with(*pip, fmt.Sprintf("pip%d.%d", major, minor)))
	}
	if easy != nil {
		out = append(out, with(*easy, "easy_install"), with(*easy, fmt.Sprintf("easy_install-%d.%d", major, minor)))
	}
	return out
}
