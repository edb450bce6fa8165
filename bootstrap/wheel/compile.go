package wheel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
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

// compileScript reads one JSON request per line on stdin,
// {"id": N, "files": [[path, stripdir], ...]}, compiles the files in a pool
// of forked workers, and answers each request, in order, with one line
// {"id": N, "pycs": [pyc path or null, ...]}. Workers are forked
// explicitly (and started before the answering thread exists): the script
// has no file a spawned or forkserver child could import.
const compileScript = `
import sys, os, json, compileall, importlib.util, py_compile, multiprocessing, threading, queue
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
def batch(items):
    return [one(i) for i in items]
def noop(_):
    return None
workers = int(sys.argv[1])
ex = None
if workers > 1:
    ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    list(ex.map(noop, range(workers * 4)))
answers = queue.Queue()
def answer():
    try:
        while True:
            item = answers.get()
            if item is None:
                return
            rid, parts = item
            pycs = []
            for p in parts:
                pycs.extend(p if isinstance(p, list) else p.result())
            sys.stdout.write(json.dumps({"id": rid, "pycs": pycs}) + "\n")
            sys.stdout.flush()
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
t = threading.Thread(target=answer)
t.start()
try:
    for line in sys.stdin:
        req = json.loads(line)
        files = req["files"]
        if ex is None or len(files) < 16:
            parts = [batch(files)]
        else:
            n = max(4, min(64, len(files) // (workers * 4)))
            parts = [ex.submit(batch, files[i:i + n]) for i in range(0, len(files), n)]
        answers.put((req["id"], parts))
except BaseException:
    import traceback
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
answers.put(None)
t.join()
if ex:
    ex.shutdown()
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

// compileSession is one running compile process.
type compileSession struct {
	c      *Compiler
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr lockedBuffer
	// stderrDone is closed when the process's stderr has been read to EOF.
	stderrDone chan struct{}

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan compileAnswer
	failed  error         // set once the process's output ended
	done    chan struct{} // closed when the reader is finished
}

type compileAnswer struct {
	ID   int       `json:"id"`
	Pycs []*string `json:"pycs"`
}

// start runs the compile process. The caller must call close.
func (c *Compiler) start(ctx context.Context) (*compileSession, error) {
	workers := c.Workers
	if workers <= 0 {
		workers = 2
	}
	cmd := exec.CommandContext(ctx, c.Python, "-I", "-S", "-c", compileScript, fmt.Sprint(workers))
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=", "SOURCE_DATE_EPOCH=")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	s := &compileSession{c: c, cmd: cmd, stdin: stdin, waiting: map[int]chan compileAnswer{},
		done: make(chan struct{}), stderrDone: make(chan struct{})}
	cmd.WaitDelay = 10 * time.Second
	// The pool's workers are the interpreter's children: on cancellation
	// kill the whole process group, so no orphan keeps compiling or holds
	// the pipes open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("compile bytecode with %s: %w", c.Python, err)
	}
	go s.read(stdout)
	go func() {
		defer close(s.stderrDone)
		io.Copy(&s.stderr, stderr)
	}()
	return s, nil
}

// read delivers answers to their waiters until the process's stdout ends.
func (s *compileSession) read(r io.Reader) {
	defer close(s.done)
	dec := json.NewDecoder(r)
	for {
		var a compileAnswer
		if err := dec.Decode(&a); err != nil {
			s.mu.Lock()
			s.failed = fmt.Errorf("compile bytecode with %s: output ended (%v)", s.c.Python, err)
			for id, ch := range s.waiting {
				close(ch)
				delete(s.waiting, id)
			}
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		ch := s.waiting[a.ID]
		delete(s.waiting, a.ID)
		s.mu.Unlock()
		if ch != nil {
			ch <- a
		}
	}
}

// compile compiles one extracted entry and adds its bytecode to the
// manifest. Safe for concurrent use.
func (s *compileSession) compile(ctx context.Context, p *pendingEntry) error {
	e := &p.entry
	e.CacheTag = s.c.CacheTag
	var srcs []string
	var files [][2]string
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
		srcs = append(srcs, f.Path)
		files = append(files, [2]string{filepath.Join(p.tmp, filepath.FromSlash(f.Path)), strip})
	}
	if len(files) == 0 {
		return nil
	}
	ch := make(chan compileAnswer, 1)
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		return s.errorf()
	}
	id := s.nextID
	s.nextID++
	s.waiting[id] = ch
	line, err := json.Marshal(map[string]any{"id": id, "files": files})
	if err == nil {
		line = append(line, '\n')
		_, err = s.stdin.Write(line) // under mu: one request per line
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("compile bytecode with %s: %w: %s", s.c.Python, err, s.errorf())
	}
	var a compileAnswer
	var ok bool
	select {
	case a, ok = <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	if !ok {
		return s.errorf()
	}
	if len(a.Pycs) != len(files) {
		return fmt.Errorf("compile bytecode with %s: %d answers for %d files", s.c.Python, len(a.Pycs), len(files))
	}
	have := make(map[string]bool, len(e.Files))
	for _, f := range e.Files {
		have[f.Path] = true
	}
	for i, r := range a.Pycs {
		if r == nil {
			continue
		}
		rel, err := filepath.Rel(p.tmp, *r)
		if err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("compile bytecode: %s (for %s) is outside %s", *r, srcs[i], p.tmp)
		}
		rel = filepath.ToSlash(rel)
		if have[rel] {
			continue // the wheel shipped this .pyc itself; RECORD already covers it
		}
		st, err := os.Stat(*r)
		if err != nil {
			return fmt.Errorf("compile bytecode: %w", err)
		}
		e.Files = append(e.Files, File{Path: rel, Size: st.Size(), Bytecode: true})
	}
	slices.SortFunc(e.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return nil
}

func (s *compileSession) errorf() error {
	// The process is dying: wait (briefly) for all it had to say.
	select {
	case <-s.stderrDone:
	case <-time.After(5 * time.Second):
	}
	s.mu.Lock()
	failed := s.failed
	s.mu.Unlock()
	if failed == nil {
		failed = fmt.Errorf("compile bytecode with %s failed", s.c.Python)
	}
	return fmt.Errorf("%w: %s", failed, lastLines(s.stderrString(), 5))
}

func (s *compileSession) stderrString() string { return s.stderr.String() }

// close ends the process and waits for it.
func (s *compileSession) close() error {
	s.stdin.Close()
	<-s.done
	<-s.stderrDone
	if err := s.cmd.Wait(); err != nil {
		return fmt.Errorf("compile bytecode with %s: %w: %s", s.c.Python, err, lastLines(s.stderrString(), 5))
	}
	return nil
}

// lockedBuffer keeps the end of what the process wrote to stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		l.b.Next(l.b.Len() - 64<<10)
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
