package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
)

// topLevelModules lists the importable top-level names a wheel installs into
// site-packages: packages (directories, namespace ones included) and
// modules (.py files and extension modules) at the root of the purelib or
// platlib tree. Private names (leading underscore) are left out when a
// public one exists, so that e.g. setuptools' _distutils_hack does not stand
// for setuptools.
func topLevelModules(e *wheel.Entry) []string {
	seen := map[string]bool{}
	for _, f := range e.Files {
		p := f.Path
		if e.Data != "" {
			if rest, ok := strings.CutPrefix(p, e.Data+"/purelib/"); ok {
				p = rest
			} else if rest, ok := strings.CutPrefix(p, e.Data+"/platlib/"); ok {
				p = rest
			} else if strings.HasPrefix(p, e.Data+"/") {
				continue
			}
		}
		first, rest, isDir := strings.Cut(p, "/")
		if strings.HasSuffix(first, ".dist-info") || strings.HasSuffix(first, ".data") || first == "__pycache__" {
			continue
		}
		var name string
		switch {
		case isDir && rest != "":
			name = first
		case strings.HasSuffix(first, ".py"):
			name = strings.TrimSuffix(first, ".py")
		case strings.HasSuffix(first, ".so") || strings.HasSuffix(first, ".pyd"):
			name, _, _ = strings.Cut(first, ".")
		default:
			continue
		}
		if isIdentifier(name) {
			seen[name] = true
		}
	}
	var public, private []string
	for n := range seen {
		if strings.HasPrefix(n, "_") {
			private = append(private, n)
		} else {
			public = append(public, n)
		}
	}
	if len(public) == 0 {
		public = private
	}
	sort.Strings(public)
	return public
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' || c > 127) {
			return false
		}
	}
	return true
}

// smokeImport is one import to try and the group it speaks for.
type smokeImport struct {
	Group   string
	Package string
	Module  string
}

// smokeFailure is one failed import, or one that did not finish in time.
type smokeFailure struct {
	smokeImport
	Reason   string
	TimedOut bool // inconclusive: not held against the group
}

// smokeCheck imports each module in a fresh isolated interpreter
// (python -I -c <smokeProbe> m, which imports m as `import m` would), jobs
// at a time, each bounded by timeout. One process per module: some
// packages cannot share a process, and one crash must not hide the
// others. passed, when set, is told of each import that succeeds, as it
// does, with the child's report of what the import depended on (nil when
// it wrote none).
func smokeCheck(ctx context.Context, python string, imports []smokeImport, jobs int, timeout time.Duration, passed func(smokeImport, []byte)) []smokeFailure {
	if jobs < 1 {
		jobs = 1
	}
	var (
		mu       sync.Mutex
		failures []smokeFailure
		wg       sync.WaitGroup
		sem      = make(chan struct{}, jobs)
	)
	for _, im := range imports {
		wg.Add(1)
		sem <- struct{}{}
		go func(im smokeImport) {
			defer wg.Done()
			defer func() { <-sem }()
			if report, reason, timedOut := importOne(ctx, python, im.Module, timeout); reason != "" {
				mu.Lock()
				failures = append(failures, smokeFailure{im, reason, timedOut})
				mu.Unlock()
			} else if passed != nil {
				passed(im, report)
			}
		}(im)
	}
	wg.Wait()
	sort.Slice(failures, func(i, j int) bool { return failures[i].Module < failures[j].Module })
	return failures
}

// importOne imports module in a fresh interpreter: its report and "" when
// it worked, else why not, and whether it was only that the time ran out.
func importOne(ctx context.Context, python, module string, timeout time.Duration) (report []byte, reason string, timedOut bool) {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, python, "-I", "-c", smokeProbe, module)
	cmd.Dir = filepath.Dir(python)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// A process the import left running may hold stderr open: once the
	// import's own process is gone, wait for its output a little only.
	cmd.WaitDelay = 2 * time.Second
	// The report comes on descriptor 3, apart from whatever the import
	// prints.
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Sprintf("import %s: %v", module, err), false
	}
	defer r.Close()
	cmd.ExtraFiles = []*os.File{w}
	got := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(io.LimitReader(r, maxSmokeReport+1))
		got <- data
	}()
	err = cmd.Start()
	w.Close()
	if err == nil {
		err = cmd.Wait()
	}
	// A process the import left behind may hold the pipe open: the report
	// was written before the child exited (into the pipe's buffer, or
	// read already), or never.
	r.SetReadDeadline(time.Now().Add(time.Second))
	report = <-got
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		// ErrWaitDelay: the import's process exited 0; what it left
		// behind still held its output.
		return report, "", false
	}
	if ctx.Err() == nil && errors.Is(tctx.Err(), context.DeadlineExceeded) {
		return nil, fmt.Sprintf("import %s did not finish within %s", module, timeout), true
	}
	last := strings.TrimSpace(stderr.String())
	if i := strings.LastIndex(last, "\n"); i >= 0 {
		last = last[i+1:]
	}
	if last == "" {
		last = err.Error()
	}
	return nil, fmt.Sprintf("import %s failed: %s", module, last), false
}

// Smoke records (DESIGN.md §5.5). An import that passed in a generation
// passes again: the generation's content is fixed by its id. Each pass is
// recorded as a file <volume>/.volboot/smoke/<generation>/<module>, made
// as soon as the import returns, so that a worker killed during the
// smoke check (on a real stack it imports torch and the like, seconds
// each on a network volume) leaves its results to the next, which checks
// only the rest. Under a kill loop that is what lets a first boot finish:
// without it every try would repeat the whole check. Its presence is all
// the generation itself needs; its content, when there is any, is what
// the import depended on (smokedeps.go), which lets another generation
// take the pass over without running the import. A record cut short by a
// kill still says the import passed here, and does not parse as one
// another generation could use.

// smokePassed lists the modules recorded as passed in generation id.
func (c *Config) smokePassed(id string) map[string]bool {
	ents, _ := os.ReadDir(c.Paths.Smoke(id))
	out := make(map[string]bool, len(ents))
	for _, e := range ents {
		out[e.Name()] = true
	}
	return out
}

// recordSmokePass records that module imported in generation id, with
// what it depended on (record, possibly empty). Failing to record costs
// only a repeated import later. Not fsynced: a record lost in a crash is
// an import run again.
func (c *Config) recordSmokePass(id, module string, record []byte) {
	dir := c.Paths.Smoke(id)
	p := filepath.Join(dir, module)
	write := func() error {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		_, err = f.Write(record)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	err := write()
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			err = write()
		}
	}
	if err != nil {
		c.Logger.Debug("could not record a smoke check pass", zap.String("path", p), zap.Error(err))
	}
}

// maxSmokeCandidates bounds the other generations whose records a smoke
// check reads for each import.
const maxSmokeCandidates = 8

// smokeCandidates lists the other generations that hold smoke records,
// the most recently recorded first.
func (c *Config) smokeCandidates(self string) []string {
	ents, _ := os.ReadDir(c.Paths.SmokeRecords())
	type cand struct {
		id string
		t  time.Time
	}
	var cs []cand
	for _, e := range ents {
		if !e.IsDir() || e.Name() == self {
			continue
		}
		if fi, err := e.Info(); err == nil {
			cs = append(cs, cand{e.Name(), fi.ModTime()})
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].t.After(cs[j].t) })
	out := make([]string, 0, min(len(cs), maxSmokeCandidates))
	for i := 0; i < len(cs) && i < maxSmokeCandidates; i++ {
		out = append(out, cs[i].id)
	}
	return out
}

// smokeIndex indexes generation gen's plan for its smoke records.
func (c *Config) smokeIndex(info *interp.Info, gen *Generation, entries map[string]*wheel.Entry) (*genIndex, error) {
	files, l, err := c.planFiles(info, gen, entries)
	if err != nil {
		return nil, err
	}
	root, err := filepath.Abs(c.Paths.Env(gen.ID))
	if err != nil {
		return nil, err
	}
	store, err := filepath.Abs(c.Paths.Store())
	if err != nil {
		return nil, err
	}
	return newGenIndex(root, l, files, store), nil
}

// reuseSmoke takes over, for generation id, the passes of earlier
// generations whose records hold here (smokedeps.go), and returns the
// imports left to run and, for each of them that had a record, why it
// did not hold.
func (c *Config) reuseSmoke(ix *genIndex, ih, id string, todo []smokeImport) (left []smokeImport, reused []string, why []string) {
	cands := c.smokeCandidates(id)
	if len(cands) == 0 {
		return todo, nil, nil
	}
	for _, im := range todo {
		ok := false
		first := ""
		for _, g := range cands {
			data, err := os.ReadFile(filepath.Join(c.Paths.Smoke(g), im.Module))
			if err != nil {
				continue
			}
			rec, err := parseSmokeRecord(data)
			if err != nil || rec == nil || rec.Module != im.Module {
				continue
			}
			holds, reason := ix.holds(rec, ih)
			if holds {
				c.recordSmokePass(id, im.Module, data)
				ok = true
				break
			}
			if first == "" {
				first = im.Module + ": " + reason + " since " + g
			}
		}
		if ok {
			reused = append(reused, im.Module)
			continue
		}
		left = append(left, im)
		if first != "" {
			why = append(why, first)
		}
	}
	return left, reused, why
}

// smoke imports each active group's requirements in the built generation,
// run by the interpreter python gives once it is known that some import
// has passed neither before in this generation nor, by a record that
// holds here, in an earlier one: the generation's on the volume, or that
// of this worker's local tree of it (smokePython), which release lets go
// after. It reports whether it degraded any group (the caller then
// rebuilds); err comes from python alone.
func (c *Config) smoke(ctx context.Context, lk *lockfile.Lock, info *interp.Info, gen *Generation, plans []*groupPlan, entries map[string]*wheel.Entry,
	python func() (path string, release func(), err error)) (bool, error) {
	var imports []smokeImport
	for _, p := range plans {
		if !p.linked() {
			continue
		}
		for _, r := range p.group.Requirements {
			n := pep508.NormalizeName(r.Name)
			for _, s := range p.selected {
				if s.Package.Normalized != n {
					continue
				}
				for _, m := range topLevelModules(entries[c.storeKey(&s)]) {
					imports = append(imports, smokeImport{Group: p.group.Name, Package: s.Package.Name, Module: m})
				}
			}
		}
	}
	passed := c.smokePassed(gen.ID)
	todo := imports[:0:0]
	for _, im := range imports {
		if !passed[im.Module] {
			todo = append(todo, im)
		}
	}
	before := len(imports) - len(todo)
	var (
		ix     *genIndex
		ih     = interpHash(info)
		reused []string
		why    []string
	)
	if len(todo) > 0 {
		t0 := time.Now()
		var err error
		if ix, err = c.smokeIndex(info, gen, entries); err != nil {
			c.Logger.Warn("smoke check: cannot plan the generation to record what imports depend on; they are checked here only", zap.Error(err))
		} else {
			t1 := time.Now()
			todo, reused, why = c.reuseSmoke(ix, ih, gen.ID, todo)
			c.Logger.Debug("smoke check: earlier generations' records read", zap.Duration("plan", t1.Sub(t0)), zap.Duration("check", time.Since(t1)))
		}
	}
	var run []string
	for _, im := range todo {
		run = append(run, im.Module)
	}
	c.Logger.Info(fmt.Sprintf("smoke check: %d of %d imports passed before in this generation, %d in an earlier one with the same dependencies; checking %d",
		before, len(imports), len(reused), len(todo)), zap.Strings("reused", reused), zap.Strings("run", run), zap.Strings("changed", why))
	if len(todo) == 0 {
		return false, nil
	}
	interpreter, release, err := python()
	if err != nil {
		return false, err
	}
	defer release()
	if ix != nil {
		// A local tree holds the generation's files at the same relative
		// paths: what the imports read there is recorded as the
		// generation's.
		ix.alias(filepath.Dir(filepath.Dir(interpreter)))
	}
	c.Progress.Phase(fmt.Sprintf("smoke-checking %d imports", len(todo)))
	lk.SetPhase(fmt.Sprintf("smoke-checking %d imports", len(todo)))
	failures := smokeCheck(ctx, interpreter, todo, c.Jobs, c.SmokeTimeout, func(im smokeImport, report []byte) {
		var record []byte
		if ix != nil && report != nil {
			r, err := parseSmokeReport(report)
			if err != nil {
				c.Logger.Debug("smoke check: no record of what the import depended on", zap.String("module", im.Module), zap.Error(err))
			} else if rec, why := ix.recordFor(im.Module, ih, r); rec == nil {
				c.Logger.Info("smoke check: this import's pass holds in this generation only", zap.String("module", im.Module), zap.String("why", why))
			} else {
				record = rec.marshal()
			}
		}
		c.recordSmokePass(gen.ID, im.Module, record)
	})
	degraded := false
	for _, f := range failures {
		if f.TimedOut {
			// Not evidence against the package: on MooseFS ten cold imports
			// of the F5 stack at once took more than 2 minutes each
			// (transformers), and a required group failed for it. An import
			// that really hangs shows at the handler's ready-timeout. It is
			// not recorded as passed, so the next full sync tries again.
			c.Logger.Warn("smoke check inconclusive: not held against the group; the next sync tries it again", zap.String("group", f.Group),
				zap.String("package", f.Package), zap.String("reason", f.Reason))
			continue
		}
		for _, p := range plans {
			if p.group.Name == f.Group && p.linked() {
				c.Logger.Warn("smoke check failed", zap.String("group", f.Group), zap.String("package", f.Package), zap.String("reason", f.Reason))
				p.fail(f.Package, f.Reason)
				degraded = true
			}
		}
	}
	return degraded, nil
}
