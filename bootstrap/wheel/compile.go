package wheel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Compiler precompiles bytecode into store entries with the target
// interpreter's own compileall, as pip does after an install: only .py files
// that land in site-packages (the wheel root and .data/purelib|platlib),
// optimization level of the interpreter (plain .pyc), timestamp
// invalidation, errors ignored (pip ignores them too: a Python 2 only file
// simply has no bytecode).
//
// Each .pyc records its source path relative to site-packages, so no store
// or volume path is baked into the bytes; the import system replaces
// co_filename with the real path at load time anyway.
type Compiler struct {
	Python   string // the target interpreter
	CacheTag string // sys.implementation.cache_tag, e.g. "cpython-311"
	Workers  int    // parallel compile processes; default 2
}

// compileScript reads {"workers": N, "files": [[path, stripdir], ...]} on
// stdin and prints a JSON list, per file, of the .pyc written or null.
// Workers are forked explicitly: the script has no file a spawned or
// forkserver child could import.
const compileScript = `
import sys, os, json, compileall, importlib.util, py_compile, multiprocessing
from concurrent.futures import ProcessPoolExecutor
def one(item):
    full, strip = item
    try:
        ok = compileall.compile_file(full, stripdir=strip, quiet=2, force=True,
                                     invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    except Exception:
        ok = False
    pyc = importlib.util.cache_from_source(full)
    return pyc if ok and os.path.exists(pyc) else None
req = json.load(sys.stdin)
files, workers = req["files"], req["workers"]
if workers > 1 and len(files) > 64:
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
        res = list(ex.map(one, files, chunksize=max(1, min(256, len(files) // (workers * 8)))))
else:
    res = [one(f) for f in files]
sys.stdout.write(json.dumps(res))
`

// sitePackagesRoot returns, for a file of a wheel, the prefix that maps to
// site-packages ("" for the wheel root, ".data/purelib" etc.), and whether
// the file lands in site-packages at all.
func sitePackagesRoot(e *Entry, p string) (string, bool) {
	if e.Data != "" && strings.HasPrefix(p, e.Data+"/") {
		rest := strings.TrimPrefix(p, e.Data+"/")
		kind, _, _ := strings.Cut(rest, "/")
		if kind == "purelib" || kind == "platlib" {
			return e.Data + "/" + kind, true
		}
		return "", false
	}
	return "", true
}

func (c *Compiler) compileEntries(ctx context.Context, ps []*pendingEntry) error {
	type job struct {
		p   *pendingEntry
		src string
	}
	var jobs []job
	var req struct {
		Workers int         `json:"workers"`
		Files   [][2]string `json:"files"`
	}
	req.Workers = c.Workers
	if req.Workers <= 0 {
		req.Workers = 2
	}
	for _, p := range ps {
		e := &p.entry
		for _, f := range e.Files {
			if !strings.HasSuffix(f.Path, ".py") || strings.HasPrefix(f.Path, e.DistInfo+"/") {
				continue
			}
			root, ok := sitePackagesRoot(e, f.Path)
			if !ok {
				continue
			}
			strip := p.tmp
			if root != "" {
				strip = filepath.Join(p.tmp, filepath.FromSlash(root))
			}
			jobs = append(jobs, job{p, f.Path})
			req.Files = append(req.Files, [2]string{filepath.Join(p.tmp, filepath.FromSlash(f.Path)), strip})
		}
	}
	for _, p := range ps {
		p.entry.CacheTag = c.CacheTag
	}
	if len(jobs) == 0 {
		return nil
	}
	in, err := json.Marshal(req)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, c.Python, "-I", "-S", "-c", compileScript)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=", "SOURCE_DATE_EPOCH=")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("compile bytecode with %s: %w: %s", c.Python, err, lastLines(stderr.String(), 5))
	}
	var res []*string
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || len(res) != len(jobs) {
		return fmt.Errorf("compile bytecode with %s: unexpected output (%v): %s", c.Python, err, lastLines(stdout.String()+stderr.String(), 5))
	}
	for i, r := range res {
		if r == nil {
			continue
		}
		p := jobs[i].p
		rel, err := filepath.Rel(p.tmp, *r)
		if err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("compile bytecode: %s is outside %s", *r, p.tmp)
		}
		st, err := os.Stat(*r)
		if err != nil {
			return fmt.Errorf("compile bytecode: %w", err)
		}
		p.entry.Files = append(p.entry.Files, File{Path: filepath.ToSlash(rel), Size: st.Size(), Bytecode: true})
	}
	for _, p := range ps {
		slices.SortFunc(p.entry.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
		// A wheel that already ships a .pyc at the same path would now be
		// listed twice; keep the compiled one only if the wheel had none.
		p.entry.Files = slices.CompactFunc(p.entry.Files, func(a, b File) bool { return a.Path == b.Path })
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
