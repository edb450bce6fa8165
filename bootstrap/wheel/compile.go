package wheel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/volboot/volboot/bootstrap/fileops"
)

// Compiler precompiles bytecode into store entries with the target
// interpreter, as pip does after an install: only .py files that land in
// site-packages (the wheel root and .data/purelib|platlib), at the
// interpreter's own optimization level (plain .pyc), with timestamp
// invalidation, errors ignored (pip ignores them too: a Python 2 only file
// simply has no bytecode).
//
// The interpreter's workers compile in memory exactly as py_compile does
// (compile(source, dfile, "exec", dont_inherit=True), then magic number,
// flags, source mtime and size, marshalled code) and return the bytes;
// volboot writes the .pyc files itself, with many creates in flight and
// the store's durability rules. On a filesystem where a create is a round
// trip this is the difference between one create at a time per worker and
// dozens in flight.
//
// Each .pyc records its source path relative to site-packages, so no store
// or volume path is baked into the bytes; the import system replaces
// co_filename with the real path at load time anyway.
type Compiler struct {
	Python   string // the target interpreter
	CacheTag string // sys.implementation.cache_tag, e.g. "cpython-311"; "" disables bytecode
	Workers  int    // parallel compile processes; default 2
}

// compileScript reads one JSON request per line on stdin,
// {"id": N, "files": [[path, dfile], ...]}, compiles the files in a pool of
// forked workers, and answers each request, in request order, with a JSON
// line {"id": N, "sizes": [...]} followed by the concatenated .pyc bytes
// (size 0: the file did not compile). Workers are forked explicitly (and
// started before the answering thread exists): the script has no file a
// spawned or forkserver child could import.
const compileScript = `
import sys, os, json, marshal, struct, importlib.util, multiprocessing, threading, queue
from concurrent.futures import ProcessPoolExecutor
MAGIC = importlib.util.MAGIC_NUMBER
def one(item):
    full, dfile = item
    try:
        st = os.stat(full)
        with open(full, "rb") as f:
            source = f.read()
        code = compile(source, dfile, "exec", dont_inherit=True)
        return MAGIC + struct.pack("<III", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF) + marshal.dumps(code)
    except Exception:
        return b""
def batch(items):
    return [one(i) for i in items]
def noop(_):
    return None
workers = int(sys.argv[1])
ex = None
if workers > 1:
    ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    list(ex.map(noop, range(workers * 4)))
out = sys.stdout.buffer
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
            out.write(json.dumps({"id": rid, "sizes": [len(b) for b in pycs]}).encode() + b"\n")
            for b in pycs:
                out.write(b)
            out.flush()
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
	waiting map[int]chan [][]byte
	failed  error         // set once the process's output ended
	done    chan struct{} // closed when the reader is finished
}

// start runs the compile process. The caller must call close.
func (c *Compiler) start(ctx context.Context) (*compileSession, error) {
	workers := c.Workers
	if workers <= 0 {
		workers = 2
	}
	cmd := exec.CommandContext(ctx, c.Python, "-I", "-S", "-c", compileScript, fmt.Sprint(workers))
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
	s := &compileSession{c: c, cmd: cmd, stdin: stdin, waiting: map[int]chan [][]byte{},
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
	br := bufio.NewReaderSize(r, 1<<20)
	fail := func(err error) {
		s.mu.Lock()
		s.failed = fmt.Errorf("compile bytecode with %s: output ended (%v)", s.c.Python, err)
		for id, ch := range s.waiting {
			close(ch)
			delete(s.waiting, id)
		}
		s.mu.Unlock()
		io.Copy(io.Discard, br)
	}
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			fail(err)
			return
		}
		var hdr struct {
			ID    int     `json:"id"`
			Sizes []int64 `json:"sizes"`
		}
		if err := json.Unmarshal(line, &hdr); err != nil {
			fail(fmt.Errorf("bad answer %q: %v", lastLines(string(line), 1), err))
			return
		}
		pycs := make([][]byte, len(hdr.Sizes))
		for i, n := range hdr.Sizes {
			if n < 0 || n > 1<<30 {
				fail(fmt.Errorf("bad size %d", n))
				return
			}
			pycs[i] = make([]byte, n)
			if _, err := io.ReadFull(br, pycs[i]); err != nil {
				fail(err)
				return
			}
		}
		s.mu.Lock()
		ch := s.waiting[hdr.ID]
		delete(s.waiting, hdr.ID)
		s.mu.Unlock()
		if ch != nil {
			ch <- pycs
		}
	}
}

// pycPath is where the import system looks for the bytecode of src (a
// '/'-separated relative path ending in .py).
func pycPath(src, cacheTag string) string {
	dir, base := path.Split(src)
	return dir + "__pycache__/" + strings.TrimSuffix(base, ".py") + "." + cacheTag + ".pyc"
}

// compile compiles one extracted entry, writes its .pyc files (sem bounds
// the creates in flight) and adds them to the manifest. A big entry is
// compiled in chunks, each journaled before its files are written, and a
// resumed one keeps the journaled .pyc files that check out
// (bytecode_journal.go). Safe for concurrent use.
func (s *compileSession) compile(ctx context.Context, p *pendingEntry, ops *fileops.Scheduler, fsync bool) error {
	e := &p.entry
	if s.c.CacheTag == "" {
		return nil
	}
	e.CacheTag = s.c.CacheTag
	srcs, files := s.targets(p)
	if len(files) == 0 {
		return nil
	}
	var added []File
	var journals []string
	todo := make([]int, len(srcs))
	for i := range todo {
		todo[i] = i
	}
	if p.resumed {
		var journal map[string]journalFile
		journal, journals = readJournals(p.tmp)
		added, todo = keepJournaled(ctx, p.tmp, s.c.CacheTag, srcs, journal, ops, fsync)
		for _, f := range added {
			p.dirs = append(p.dirs, path.Dir(f.Path))
		}
	}
	journaled := len(srcs) > journalMin
	// Every chunk is asked for at once, so the compiler never waits for
	// the writes; each chunk is written as its answer comes.
	type request struct {
		srcs  []string
		files [][2]string
		ch    chan [][]byte
	}
	var reqs []request
	for _, c := range chunked(len(todo), bytecodeChunk) {
		r := request{}
		for _, i := range todo[c[0]:c[1]] {
			r.srcs = append(r.srcs, srcs[i])
			r.files = append(r.files, files[i])
		}
		ch, err := s.send(r.files)
		if err != nil {
			return err
		}
		r.ch = ch
		reqs = append(reqs, r)
	}
	token := fmt.Sprintf("%08x", rand.Uint32())
	for ci, r := range reqs {
		pycs, err := s.wait(ctx, r.ch, len(r.files))
		if err != nil {
			return err
		}
		if journaled {
			name := fmt.Sprintf("%s-%d", token, ci)
			if err := writeJournal(p.tmp, name, s.c.CacheTag, r.srcs, pycs); err != nil {
				return err
			}
			journals = append(journals, journalPrefix+name+".json")
		}
		written, err := writePycs(ctx, p, r.srcs, pycs, s.c.CacheTag, ops, fsync)
		if err != nil {
			return err
		}
		added = append(added, written...)
	}
	if err := removeJournals(p.tmp, journals); err != nil {
		return err
	}
	e.Files = append(e.Files, added...)
	slices.SortFunc(e.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return nil
}

// targets lists the entry's sources that get bytecode (relative paths) and
// the compile requests' [file, dfile] pairs for them.
func (s *compileSession) targets(p *pendingEntry) (srcs []string, files [][2]string) {
	e := &p.entry
	have := make(map[string]bool, len(e.Files))
	for _, f := range e.Files {
		have[f.Path] = true
	}
	for _, f := range e.Files {
		if !strings.HasSuffix(f.Path, ".py") || strings.HasPrefix(f.Path, e.DistInfo+"/") {
			continue
		}
		root, ok := sitePackagesRoot(e, f.Path)
		if !ok {
			continue
		}
		pyc := pycPath(f.Path, s.c.CacheTag)
		if have[pyc] || have[path.Dir(pyc)] {
			continue // the wheel ships this .pyc (or a file named __pycache__) itself
		}
		dfile := f.Path
		if root != "" {
			dfile = strings.TrimPrefix(f.Path, root+"/")
		}
		srcs = append(srcs, f.Path)
		files = append(files, [2]string{filepath.Join(p.tmp, filepath.FromSlash(f.Path)), dfile})
	}
	return srcs, files
}

// send asks the compiler for files' bytecode; the answer arrives on the
// returned channel (closed if the process dies first).
func (s *compileSession) send(files [][2]string) (chan [][]byte, error) {
	ch := make(chan [][]byte, 1)
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		return nil, s.errorf()
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
		return nil, fmt.Errorf("compile bytecode with %s: %w: %s", s.c.Python, err, s.errorf())
	}
	return ch, nil
}

// wait takes the answer of a request of n files.
func (s *compileSession) wait(ctx context.Context, ch chan [][]byte, n int) ([][]byte, error) {
	var pycs [][]byte
	var ok bool
	select {
	case pycs, ok = <-ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if !ok {
		return nil, s.errorf()
	}
	if len(pycs) != n {
		return nil, fmt.Errorf("compile bytecode with %s: %d answers for %d files", s.c.Python, len(pycs), n)
	}
	return pycs, nil
}

// writePycs writes the bytecode of srcs (pycs[i]; empty: did not compile)
// into the entry, __pycache__ directories first, many creates in flight,
// and returns their Files.
func writePycs(ctx context.Context, p *pendingEntry, srcs []string, pycs [][]byte, cacheTag string, ops *fileops.Scheduler, fsync bool) ([]File, error) {
	dirs := map[string]bool{}
	for i, b := range pycs {
		if len(b) > 0 {
			dirs[path.Dir(pycPath(srcs[i], cacheTag))] = true
		}
	}
	if err := ops.MakeDirs(ctx, p.tmp, dirs); err != nil {
		return nil, fmt.Errorf("bytecode: %w", err)
	}
	for d := range dirs {
		p.dirs = append(p.dirs, d)
	}
	added := make([]File, len(pycs))
	g := ops.Group(ctx)
	for i, b := range pycs {
		if len(b) == 0 {
			continue
		}
		rel := pycPath(srcs[i], cacheTag)
		g.Go(path.Dir(rel), func() error {
			dst := filepath.Join(p.tmp, filepath.FromSlash(rel))
			var err error
			if p.resumed {
				_, err = WriteOrKeep(dst, b, 0o644, fsync, false)
			} else {
				err = WriteNew(dst, b, 0o644, fsync)
			}
			if err != nil {
				return fmt.Errorf("bytecode %s: %w", rel, err)
			}
			added[i] = File{Path: rel, Size: int64(len(b)), Bytecode: true}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := added[:0]
	for _, f := range added {
		if f.Path != "" {
			out = append(out, f)
		}
	}
	return out, nil
}

// WriteNew creates path, which must not exist, holding data with mode
// perm (exec bits are set explicitly, so the umask cannot drop them), and
// fsyncs it when asked. On error nothing is left at path.
func WriteNew(path string, data []byte, perm os.FileMode, fsync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && perm&0o111 != 0 {
		err = os.Chmod(path, perm)
	}
	if err != nil {
		os.Remove(path)
	}
	return err
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
		failed = errors.New("compile bytecode with " + s.c.Python + " failed")
	}
	return fmt.Errorf("%w: %s", failed, lastLines(s.stderr.String(), 5))
}

// close ends the process and waits for it.
func (s *compileSession) close() error {
	s.stdin.Close()
	<-s.done
	<-s.stderrDone
	if err := s.cmd.Wait(); err != nil {
		return fmt.Errorf("compile bytecode with %s: %w: %s", s.c.Python, err, lastLines(s.stderr.String(), 5))
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
