// Package testindex is a local package index and file server for tests and
// demos: it serves wheels as a PEP 503 (HTML) and PEP 691 (JSON) simple
// index, serves any other file tree, and injects faults per file (dropped
// connections, ignored ranges, corrupt bytes, 5xx/429, stalls, wrong
// Content-Length). It counts requests and body bytes served per file.
//
// A Server is an http.Handler: use it with httptest.NewServer in Go tests or
// with http.Serve (cmd/testindex). All methods are safe for concurrent use,
// including while requests are being served. Further handlers (a fake
// Hugging Face hub, say) can be registered on Mux; the file and index routes
// are "/files/" and "/simple/", and any path added with AddFile.
package testindex

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/volboot/volboot/bootstrap/pep508"
)

// Fault describes how the server misbehaves for one file. The zero Fault is
// a well-behaved server. Times limits the fault to the file's first Times
// requests (HEAD and GET alike); zero means every request.
type Fault struct {
	Times int

	// Status answers with this status code and no body (e.g. 503, 429).
	Status int
	// RetryAfter is sent as the Retry-After header with Status.
	RetryAfter string

	// Drop closes the connection abruptly after DropAfter body bytes of a
	// response.
	Drop      bool
	DropAfter int64

	// IgnoreRange answers a ranged request with 200 and the whole body
	// although the server advertises range support (a misbehaving proxy).
	IgnoreRange bool
	// NoRanges advertises no range support and ignores Range.
	NoRanges bool

	// Corrupt flips the byte at file offset CorruptAt in what is sent.
	Corrupt   bool
	CorruptAt int64

	// Stall pauses for Stall once StallAfter body bytes of a response have
	// been sent (the request's cancellation ends the pause).
	Stall      time.Duration
	StallAfter int64

	// WrongLength adds this many bytes to the Content-Length header.
	WrongLength int64

	// Rate caps each response's body at this many bytes per second (a
	// slow network); zero is no cap.
	Rate int64
}

// Stats counts what the server did for one file.
type Stats struct {
	Requests int64 // HEAD and GET requests, faulted or not
	Bytes    int64 // body bytes handed to the connection (counted just before each write)
}

type entry struct {
	urlPath string
	content Content
	version int64 // bumped by Replace, part of the ETag
	fault   Fault

	requests atomic.Int64
	bytes    atomic.Int64

	hashOnce sync.Once
	sha256   string
	hashErr  error
}

// Server is the index and file server. Create it with New.
type Server struct {
	mux     *http.ServeMux
	modTime time.Time

	mu       sync.Mutex
	files    map[string]*entry   // by URL path
	projects map[string][]string // normalized project name -> wheel file names
	closers  []io.Closer
}

// New returns an empty server. Add content with AddWheelDir, AddWheel,
// AddFile or AddTree.
func New() *Server {
	s := &Server{
		mux:      http.NewServeMux(),
		modTime:  time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		files:    map[string]*entry{},
		projects: map[string][]string{},
	}
	s.mux.HandleFunc("/simple/", s.serveIndex)
	s.mux.HandleFunc("/", s.serveFileRoute)
	return s
}

// Mux returns the server's mux so callers can add routes. Routes added there
// take precedence over AddFile paths only where the mux's pattern matching
// says so ("/" is the file route).
func (s *Server) Mux() *http.ServeMux { return s.mux }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close releases files opened by AddWheelDir and AddTree.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c.Close())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// FileURLPath is where a wheel added with AddWheel or AddWheelDir is served.
func FileURLPath(filename string) string { return "/files/" + filename }

// AddFile serves c at urlPath (which must start with "/"). Adding a path
// again replaces its content and keeps its fault and counters.
func (s *Server) AddFile(urlPath string, c Content) error {
	if !strings.HasPrefix(urlPath, "/") || strings.HasPrefix(urlPath, "/simple/") {
		return fmt.Errorf("testindex: URL path %q must start with / and not be under /simple/", urlPath)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.files[urlPath]; ok {
		s.files[urlPath] = &entry{urlPath: urlPath, content: c, version: e.version + 1, fault: e.fault}
		s.files[urlPath].requests.Store(e.requests.Load())
		s.files[urlPath].bytes.Store(e.bytes.Load())
		return nil
	}
	s.files[urlPath] = &entry{urlPath: urlPath, content: c}
	return nil
}

// wheelName matches a wheel filename's distribution part.
var wheelName = regexp.MustCompile(`^([A-Za-z0-9](?:[A-Za-z0-9._]*[A-Za-z0-9])?)-[^-]+(-[^-]+)?-[^-]+-[^-]+-[^-]+\.whl$`)

// AddWheel serves c at FileURLPath(filename) and lists it in the index under
// the project its filename names.
func (s *Server) AddWheel(filename string, c Content) error {
	m := wheelName.FindStringSubmatch(filename)
	if m == nil {
		return fmt.Errorf("testindex: %q is not a wheel filename (name-version-[build-]python-abi-platform.whl)", filename)
	}
	if err := s.AddFile(FileURLPath(filename), c); err != nil {
		return err
	}
	proj := pep508.NormalizeName(m[1])
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.projects[proj] {
		if f == filename {
			return nil
		}
	}
	s.projects[proj] = append(s.projects[proj], filename)
	sort.Strings(s.projects[proj])
	return nil
}

// AddWheelDir serves every *.whl file directly in dir (see AddWheel).
func (s *Server) AddWheelDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("testindex: read wheel directory: %w", err)
	}
	for _, de := range ents {
		if de.IsDir() || !strings.HasSuffix(de.Name(), ".whl") {
			continue
		}
		c, err := s.openDisk(filepath.Join(dir, de.Name()))
		if err != nil {
			return err
		}
		if err := s.AddWheel(de.Name(), c); err != nil {
			return err
		}
	}
	return nil
}

// AddTree serves every regular file under dir at prefix + its slash-separated
// relative path (prefix "/hf/" and dir/a/b serves "/hf/a/b").
func (s *Server) AddTree(prefix, dir string) error {
	if !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("testindex: tree prefix %q must start and end with /", prefix)
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		c, err := s.openDisk(p)
		if err != nil {
			return err
		}
		return s.AddFile(prefix+filepath.ToSlash(rel), c)
	})
}

func (s *Server) openDisk(p string) (Content, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("testindex: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("testindex: %w", err)
	}
	s.mu.Lock()
	s.closers = append(s.closers, f)
	s.mu.Unlock()
	return &diskFile{f: f, size: fi.Size()}, nil
}

func (s *Server) lookup(urlPath string) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.files[urlPath]
	if !ok {
		return nil, fmt.Errorf("testindex: no file at %q", urlPath)
	}
	return e, nil
}

// SetFault sets the fault for the file at urlPath and resets its counters
// (Fault.Times counts from here).
func (s *Server) SetFault(urlPath string, f Fault) error {
	e, err := s.lookup(urlPath)
	if err != nil {
		return err
	}
	s.mu.Lock()
	e.fault = f
	e.requests.Store(0)
	e.bytes.Store(0)
	s.mu.Unlock()
	return nil
}

// Stats returns the counters of the file at urlPath (zero if unknown).
func (s *Server) Stats(urlPath string) Stats {
	e, err := s.lookup(urlPath)
	if err != nil {
		return Stats{}
	}
	return Stats{Requests: e.requests.Load(), Bytes: e.bytes.Load()}
}

// SHA256 returns the hex sha256 of the file at urlPath, computed once.
func (s *Server) SHA256(urlPath string) (string, error) {
	e, err := s.lookup(urlPath)
	if err != nil {
		return "", err
	}
	return e.digest()
}

func (e *entry) digest() (string, error) {
	e.hashOnce.Do(func() { e.sha256, e.hashErr = SHA256(e.content) })
	return e.sha256, e.hashErr
}

func (e *entry) etag() string {
	sum := sha256.Sum256([]byte(e.urlPath + "\x00" + strconv.FormatInt(e.content.Size(), 10) + "\x00" + strconv.FormatInt(e.version, 10)))
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

func (s *Server) serveFileRoute(w http.ResponseWriter, r *http.Request) {
	e, err := s.lookup(r.URL.Path)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	s.serveFile(w, r, e)
}

// serveFile answers GET and HEAD for one file, applying its fault.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, e *entry) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	n := e.requests.Add(1)
	s.mu.Lock()
	f := e.fault
	s.mu.Unlock()
	if f.Times > 0 && n > int64(f.Times) {
		f = Fault{}
	}
	h := w.Header()
	if f.Status != 0 {
		if f.RetryAfter != "" {
			h.Set("Retry-After", f.RetryAfter)
		}
		http.Error(w, fmt.Sprintf("injected status %d", f.Status), f.Status)
		return
	}
	size := e.content.Size()
	etag := e.etag()
	lastMod := s.modTime.Add(time.Duration(e.version) * time.Second)
	h.Set("ETag", etag)
	h.Set("Last-Modified", lastMod.UTC().Format(http.TimeFormat))
	h.Set("Content-Type", "application/octet-stream")
	if !f.NoRanges {
		h.Set("Accept-Ranges", "bytes")
	}
	start, end := int64(0), size-1
	status := http.StatusOK
	if rh := r.Header.Get("Range"); rh != "" && !f.NoRanges && !f.IgnoreRange && ifRangeHolds(r.Header.Get("If-Range"), etag, lastMod) {
		rs, re, ok := parseRange(rh, size)
		if !ok {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			http.Error(w, "unsatisfiable range", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, end, status = rs, re, http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	}
	h.Set("Content-Length", strconv.FormatInt(end-start+1+f.WrongLength, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	// A short WrongLength ends the body cleanly at the declared length
	// (the nastier case for a client: no error, just too few bytes).
	if declared := end - start + 1 + f.WrongLength; f.WrongLength < 0 {
		end = start + max(declared, 0) - 1
	}
	buf := make([]byte, 64<<10)
	var sent int64
	stalled := false
	// The rate clock: bytes sent since began (a stall restarts it).
	began, sentBefore := time.Now(), int64(0)
	for off := start; off <= end; {
		chunk := buf
		if rem := end - off + 1; int64(len(chunk)) > rem {
			chunk = chunk[:rem]
		}
		if f.Drop && sent+int64(len(chunk)) > f.DropAfter {
			chunk = chunk[:f.DropAfter-sent]
		}
		if f.Stall > 0 && !stalled && sent+int64(len(chunk)) > f.StallAfter {
			if sent >= f.StallAfter {
				stalled = true
				sleepCtx(r.Context(), f.Stall)
				if r.Context().Err() != nil {
					return
				}
				began, sentBefore = time.Now(), sent
			} else {
				chunk = chunk[:f.StallAfter-sent]
			}
		}
		if len(chunk) > 0 {
			m, err := e.content.ReadAt(chunk, off)
			if m < len(chunk) {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				panic(fmt.Errorf("testindex: read %s at %d: %w", e.urlPath, off, err))
			}
			if f.Corrupt && f.CorruptAt >= off && f.CorruptAt < off+int64(m) {
				chunk[f.CorruptAt-off] ^= 0xff
			}
			if f.Rate > 0 {
				// Each chunk leaves when the rate has earned all of it.
				due := began.Add(time.Duration(float64(sent-sentBefore+int64(len(chunk))) / float64(f.Rate) * float64(time.Second)))
				sleepCtx(r.Context(), time.Until(due))
				if r.Context().Err() != nil {
					return
				}
			}
			// Count before writing: a client can then never have received
			// bytes that Stats does not show yet.
			e.bytes.Add(int64(len(chunk)))
			w2, err := w.Write(chunk)
			e.bytes.Add(int64(w2 - len(chunk)))
			sent += int64(w2)
			off += int64(w2)
			if err != nil {
				return
			}
		}
		if f.Drop && sent >= f.DropAfter {
			if fl, ok := w.(http.Flusher); ok {
				fl.Flush()
			}
			// ErrAbortHandler makes net/http close the connection without a
			// clean end of body: the client sees an unexpected EOF.
			panic(http.ErrAbortHandler)
		}
	}
}

// ifRangeHolds reports whether a ranged response may be sent (RFC 9110
// 13.1.5): no If-Range, a strong ETag equal to ours, or a date equal to our
// Last-Modified.
func ifRangeHolds(ifRange, etag string, lastMod time.Time) bool {
	if ifRange == "" {
		return true
	}
	if strings.HasPrefix(ifRange, `"`) {
		return ifRange == etag
	}
	t, err := http.ParseTime(ifRange)
	return err == nil && t.Equal(lastMod.Truncate(time.Second))
}

// parseRange parses a single "bytes=a-b", "bytes=a-" or "bytes=-n" range.
func parseRange(h string, size int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		if n > size {
			n = size
		}
		return size - n, size - 1, size > 0
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false
	}
	end = size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start {
			return 0, 0, false
		}
		if e < end {
			end = e
		}
	}
	return start, end, true
}

const (
	jsonType = "application/vnd.pypi.simple.v1+json"
	htmlType = "application/vnd.pypi.simple.v1+html"
)

// wantsJSON does PEP 691 content negotiation: the supported type with the
// highest q wins; ties and absent Accept go to HTML (the PEP 503 default).
func wantsJSON(accept string) bool {
	best, bestQ := "html", -1.0
	for _, part := range strings.Split(accept, ",") {
		fields := strings.Split(part, ";")
		mt := strings.ToLower(strings.TrimSpace(fields[0]))
		q := 1.0
		for _, p := range fields[1:] {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "q="); ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
		}
		kind := ""
		switch mt {
		case jsonType:
			kind = "json"
		case htmlType, "text/html", "*/*":
			kind = "html"
		}
		if kind != "" && q > 0 && (q > bestQ || (q == bestQ && kind == "html")) {
			best, bestQ = kind, q
		}
	}
	return best == "json"
}

func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/simple/"), "/")
	asJSON := wantsJSON(r.Header.Get("Accept"))
	if rest == "" {
		s.mu.Lock()
		names := make([]string, 0, len(s.projects))
		for p := range s.projects {
			names = append(names, p)
		}
		s.mu.Unlock()
		sort.Strings(names)
		if asJSON {
			var b strings.Builder
			b.WriteString(`{"meta":{"api-version":"1.1"},"projects":[`)
			for i, n := range names {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, `{"name":%q}`, n)
			}
			b.WriteString("]}")
			w.Header().Set("Content-Type", jsonType)
			io.WriteString(w, b.String())
			return
		}
		var b strings.Builder
		b.WriteString("<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\"><title>Simple index</title></head><body>\n")
		for _, n := range names {
			fmt.Fprintf(&b, "<a href=\"%s/\">%s</a>\n", html.EscapeString(n), html.EscapeString(n))
		}
		b.WriteString("</body></html>\n")
		w.Header().Set("Content-Type", htmlType)
		io.WriteString(w, b.String())
		return
	}
	norm := pep508.NormalizeName(rest)
	if norm != rest {
		http.Redirect(w, r, "/simple/"+norm+"/", http.StatusMovedPermanently)
		return
	}
	s.mu.Lock()
	files := append([]string(nil), s.projects[norm]...)
	s.mu.Unlock()
	if len(files) == 0 {
		http.NotFound(w, r)
		return
	}
	type fileInfo struct {
		name, url, sha string
		size           int64
	}
	infos := make([]fileInfo, 0, len(files))
	for _, fn := range files {
		e, err := s.lookup(FileURLPath(fn))
		if err != nil {
			continue
		}
		sha, err := e.digest()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		infos = append(infos, fileInfo{fn, path.Join("/files", fn), sha, e.content.Size()})
	}
	if asJSON {
		var b strings.Builder
		fmt.Fprintf(&b, `{"meta":{"api-version":"1.1"},"name":%q,"files":[`, norm)
		for i, f := range infos {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"filename":%q,"url":%q,"hashes":{"sha256":%q},"size":%d}`, f.name, f.url, f.sha, f.size)
		}
		b.WriteString("]}")
		w.Header().Set("Content-Type", jsonType)
		io.WriteString(w, b.String())
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.1\"><title>Links for %s</title></head><body>\n<h1>Links for %s</h1>\n", html.EscapeString(norm), html.EscapeString(norm))
	for _, f := range infos {
		fmt.Fprintf(&b, "<a href=\"%s#sha256=%s\">%s</a><br>\n", html.EscapeString(f.url), f.sha, html.EscapeString(f.name))
	}
	b.WriteString("</body></html>\n")
	w.Header().Set("Content-Type", htmlType)
	io.WriteString(w, b.String())
}

// sleepCtx is used by faults that wait; it returns early when ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
