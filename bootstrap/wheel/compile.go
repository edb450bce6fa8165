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
	"net"
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
// with PycInvalidationMode.UNCHECKED_HASH (compile(source, dfile, "exec",
// dont_inherit=True), then magic number, flags 0b01, the source's
// importlib source_hash, marshalled code) and return the bytes; volboot
// writes the .pyc files itself, with many creates in flight and the
// store's durability rules. On a filesystem where a create is a round trip
// this is the difference between one create at a time per worker and
// dozens in flight.
//
// Sources go to the compiler from memory, as the unpack wrote them: on
// MooseFS reading 5,000 sources back cost a lookup, an open and a close
// each at the metadata server (about 15,000 round trips for a tenth of
// the F5 stack). That is also why the bytecode is hash-based (PEP 552)
// and not stamped with the source's mtime: the mtime is the server's,
// known only after the file is closed, and learning it costs a stat per
// file. Unchecked hash-based bytecode is also what an immutable store
// wants: the import system uses it without reading the source again (a
// timestamp check costs a stat of the .py per import, a round trip on the
// volume), the bytes depend on the source alone, so a resumed or
// repeated unpack writes identical files, and nobody edits a store file
// (generations hard-link them; status --verify reports edits).
//
// Each .pyc records its source path relative to site-packages, so no store
// or volume path is baked into the bytes; the import system replaces
// co_filename with the real path at load time anyway.
type Compiler struct {
	Python   string // the target interpreter
	CacheTag string // sys.implementation.cache_tag, e.g. "cpython-311"; "" disables bytecode
	Workers  int    // parallel compile processes; default 2
}

// compileScript reads requests on stdin, each a JSON line
// {"id": N, "files": [dfile, ...], "sizes": [...]} followed by the
// concatenated sources, compiles the files in a pool of forked workers,
// and answers each request, in request order, with a JSON line
// {"id": N, "sizes": [...]} followed by the concatenated .pyc bytes (size
// 0: the file did not compile). Workers are forked explicitly (and
// started before the answering thread exists): the script has no file a
// spawned or forkserver child could import.
const compileScript = `
import sys, os, json, marshal, struct, importlib.util, multiprocessing, threading, queue
from concurrent.futures import ProcessPoolExecutor
MAGIC = importlib.util.MAGIC_NUMBER
FLAGS = struct.pack("<I", 0b01)
def one(item):
    dfile, source = item
    try:
        code = compile(source, dfile, "exec", dont_inherit=True)
        return MAGIC + FLAGS + importlib.util.source_hash(source) + marshal.dumps(code)
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
inp = sys.stdin.buffer
try:
    while True:
        line = inp.readline()
        if not line:
            break
        req = json.loads(line)
        sizes = req["sizes"]
        blob = inp.read(sum(sizes))
        if len(blob) != sum(sizes):
            raise EOFError("a request's sources ended early")
        files, off = [], 0
        for dfile, n in zip(req["files"], sizes):
            files.append((dfile, blob[off:off + n]))
            off += n
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

// compileName says whether the wheel file at p (relative to the entry)
// gets bytecode: a .py file outside the .dist-info directory that lands in
// site-packages (the wheel root, or .data/purelib or platlib). dfile is the
// name the bytecode records: p relative to site-packages.
func compileName(distInfo, dataDir, p string) (dfile string, ok bool) {
	if !strings.HasSuffix(p, ".py") || strings.HasPrefix(p, distInfo+"/") {
		return "", false
	}
	if dataDir != "" && strings.HasPrefix(p, dataDir+"/") {
		rest := strings.TrimPrefix(p, dataDir+"/")
		kind, inner, _ := strings.Cut(rest, "/")
		if kind == "purelib" || kind == "platlib" {
			return inner, true
		}
		return "", false
	}
	return p, true
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
	srcs, dfiles := s.targets(p)
	if len(srcs) == 0 {
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
		added, todo = keepJournaled(ctx, p.tmp, s.c.CacheTag, srcs, journal, ops, fsync, p.small)
		for _, f := range added {
			p.dirs = append(p.dirs, path.Dir(f.Path))
		}
	}
	journaled := len(srcs) > journalMin
	// Every chunk is asked for at once, so the compiler never waits for
	// the writes; each chunk is written as its answer comes.
	type request struct {
		srcs []string
		ch   chan [][]byte
	}
	var reqs []request
	for _, c := range chunked(len(todo), bytecodeChunk) {
		r := request{}
		var names []string
		var sources [][]byte
		for _, i := range todo[c[0]:c[1]] {
			b, err := p.source(srcs[i])
			if err != nil {
				return err
			}
			r.srcs = append(r.srcs, srcs[i])
			names = append(names, dfiles[i])
			sources = append(sources, b)
		}
		ch, err := s.send(names, sources)
		if err != nil {
			return err
		}
		r.ch = ch
		reqs = append(reqs, r)
	}
	p.sources = nil // sent: the compiler holds them now
	token := fmt.Sprintf("%08x", rand.Uint32())
	for ci, r := range reqs {
		pycs, err := s.wait(ctx, r.ch, len(r.srcs))
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
		if p.small != nil {
			for i, b := range pycs {
				if len(b) > 0 {
					p.small.add(pycPath(r.srcs[i], s.c.CacheTag), b)
				}
			}
		}
	}
	if err := removeJournals(p.tmp, journals); err != nil {
		return err
	}
	e.Files = append(e.Files, added...)
	slices.SortFunc(e.Files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return nil
}

// targets lists the entry's sources that get bytecode (relative paths)
// and the name each one's bytecode records.
func (s *compileSession) targets(p *pendingEntry) (srcs, dfiles []string) {
	e := &p.entry
	have := make(map[string]bool, len(e.Files))
	for _, f := range e.Files {
		have[f.Path] = true
	}
	for _, f := range e.Files {
		dfile, ok := compileName(e.DistInfo, e.Data, f.Path)
		if !ok {
			continue
		}
		pyc := pycPath(f.Path, s.c.CacheTag)
		if have[pyc] || have[path.Dir(pyc)] {
			continue // the wheel ships this .pyc (or a file named __pycache__) itself
		}
		srcs = append(srcs, f.Path)
		dfiles = append(dfiles, dfile)
	}
	return srcs, dfiles
}

// source returns the bytes of the entry's source file rel: from memory
// when the unpack has them, else read back (a resumed unpack keeps a
// source's bytes only when RECORD gives it a digest to check).
func (p *pendingEntry) source(rel string) ([]byte, error) {
	if b, ok := p.sources[rel]; ok {
		return b, nil
	}
	b, err := os.ReadFile(filepath.Join(p.tmp, filepath.FromSlash(rel)))
	if err != nil {
		return nil, fmt.Errorf("bytecode: read %s: %w", rel, err)
	}
	return b, nil
}

// send asks the compiler for the bytecode of sources named dfiles; the
// answer arrives on the returned channel (closed if the process dies
// first).
func (s *compileSession) send(dfiles []string, sources [][]byte) (chan [][]byte, error) {
	sizes := make([]int, len(sources))
	for i, b := range sources {
		sizes[i] = len(b)
	}
	line, err := json.Marshal(map[string]any{"files": dfiles, "sizes": sizes})
	if err != nil {
		return nil, err
	}
	ch := make(chan [][]byte, 1)
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		return nil, s.errorf()
	}
	id := s.nextID
	s.nextID++
	s.waiting[id] = ch
	// One request at a time on the pipe (under mu): its line, then its
	// sources. The id goes first so the line needs no second encoding.
	req := append([]byte(fmt.Sprintf(`{"id":%d,`, id)), line[1:]...)
	req = append(req, '\n')
	bufs := net.Buffers{req}
	for _, b := range sources {
		bufs = append(bufs, b)
	}
	_, err = bufs.WriteTo(s.stdin)
	if err != nil {
		delete(s.waiting, id)
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
		key := path.Dir(rel)
		if p.present[rel] {
			key = rel // read to be compared, not created (presentFiles)
		}
		g.Go(key, func() error {
			dst := filepath.Join(p.tmp, filepath.FromSlash(rel))
			var err error
			if p.resumed {
				_, err = WriteOrKeep(dst, b, 0o644, fsync, p.present[rel])
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
	return fileops.CreateFile(path, data, perm, fileops.CreateOptions{Fsync: fsync})
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
