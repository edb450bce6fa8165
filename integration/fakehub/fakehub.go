// Package fakehub is a local stand-in for the Hugging Face hub, for tests
// and demos. It serves the parts of the hub that volboot (and
// huggingface_hub) use:
//
//   - the resolve endpoint, HEAD and GET:
//     /{repo}/resolve/{revision}/{path}, /datasets/{repo}/resolve/...,
//     /spaces/{repo}/resolve/..., answering with X-Repo-Commit, ETag,
//     X-Linked-Etag and X-Linked-Size as the hub does; LFS files answer with
//     a 302 to a separate CDN handler, other files with their bytes (ranges
//     supported, ETag is the git blob sha1);
//   - the revision API: /api/{models|datasets|spaces}/{repo}/revision/{rev}
//     returning {"id", "sha", "siblings": [{"rfilename"}]};
//   - branches and tags resolving to commits, renamed repositories (307 with
//     a relative Location, as the hub answers for a moved repo), private
//     repositories that want a bearer token (401 without it), and the hub's
//     X-Error-Code values (RepoNotFound, RevisionNotFound, EntryNotFound).
//
// The CDN is a second handler (Hub.CDN) meant for a second server on a
// different host name, so a test can see whether credentials crossed over:
// it counts requests that carried an Authorization header. Start serves
// both on loopback: the hub on 127.0.0.1 and the CDN on 127.0.0.2 (or
// "localhost" where that address cannot be bound), so host-scoped
// credentials for one never match the other.
//
// Faults: FaultResolve makes the hub answer a status for a file's resolve
// requests; FaultBlob makes the CDN corrupt, stall or drop a blob's bytes.
// Counters: Stats for totals, BlobStats per blob.
//
// All methods are safe for concurrent use, also while requests are served.
// The hub paths have no prefix; mount it under one with http.StripPrefix
// and set Options.BasePath so relative redirects keep the prefix.
package fakehub

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/volboot/volboot/integration/testindex"
)

// Content is one file's bytes: the test index's (a size and random
// access, safe for concurrent ReadAt calls).
type Content = testindex.Content

// File is a file of a commit.
type File struct {
	Content Content
	// LFS files are redirected to the CDN and identified by their sha256;
	// the others are served by the hub and identified by their git blob
	// sha1.
	LFS bool
}

// Fault makes the CDN misbehave for one blob. Times limits it to the
// blob's first Times CDN requests; zero means every request.
type Fault struct {
	Times int
	// Status answers with this status and no body.
	Status int
	// Corrupt flips the byte at offset CorruptAt of the blob as it is sent.
	Corrupt   bool
	CorruptAt int64
	// StallAt blocks the response once it has sent the bytes before this
	// offset, until the client goes away (0: no stall). A test kills its
	// downloader while it hangs there.
	StallAt int64
	// DropAt ends the response abruptly at this offset (0: no drop).
	DropAt int64
}

// Stats counts what the hub and the CDN did.
type Stats struct {
	HubHEAD, HubGET int64 // resolve requests
	API             int64 // revision API requests
	CDNRequests     int64
	CDNBytes        int64 // body bytes the CDN sent
	CDNWithAuth     int64 // CDN requests that carried an Authorization header
}

// BlobStat counts CDN traffic for one blob.
type BlobStat struct {
	Requests int64
	Bytes    int64
}

// Options configures a Hub.
type Options struct {
	// CDNURL is the base URL of the server running Hub.CDN(); it may be set
	// later with SetCDNURL (Start does).
	CDNURL string
	// BasePath is the prefix the hub is mounted under ("" or "/hf"); it is
	// put in front of the relative redirects it sends.
	BasePath string
	// WeakETags sends the ETag of non-LFS files as a weak validator
	// (W/"..."), as the hub does for compressed responses.
	WeakETags bool
	// ResolveCache answers resolve requests for non-LFS files with a 307
	// to a relative /api/resolve-cache/{type}s/{repo}/{commit}/{path} URL
	// that serves them, as the hub does today; metadata then come from
	// the end of a relative redirect.
	ResolveCache bool
}

type blob struct {
	content Content
	sha256  string
	fault   Fault
	reqs    atomic.Int64
	bytes   atomic.Int64
}

type fileEntry struct {
	content Content
	lfs     bool
	etag    string // sha256 for LFS, git blob sha1 otherwise
}

type repo struct {
	typ, id string
	commits map[string]map[string]*fileEntry
	refs    map[string]string // branch or tag -> commit
	token   string            // required bearer token; "" = public
	seq     int
}

// Hub serves fake repositories. Create it with New.
type Hub struct {
	opt Options

	mu        sync.Mutex
	cdnURL    string
	repos     map[string]*repo  // by typ + ":" + id
	renamed   map[string]string // typ:oldid -> new id
	blobs     map[string]*blob  // by sha256
	resFaults map[string]resolveFault

	hubHEAD, hubGET, api               atomic.Int64
	cdnRequests, cdnBytes, cdnWithAuth atomic.Int64
}

type resolveFault struct {
	status int
	times  int
	seen   int
}

// New returns a hub without repositories.
func New(opt Options) *Hub {
	return &Hub{
		opt:       opt,
		cdnURL:    strings.TrimSuffix(opt.CDNURL, "/"),
		repos:     map[string]*repo{},
		renamed:   map[string]string{},
		blobs:     map[string]*blob{},
		resFaults: map[string]resolveFault{},
	}
}

// SetCDNURL sets the base URL LFS redirects point at.
func (h *Hub) SetCDNURL(u string) {
	h.mu.Lock()
	h.cdnURL = strings.TrimSuffix(u, "/")
	h.mu.Unlock()
}

func key(typ, id string) string { return typ + ":" + id }

func checkType(typ string) error {
	switch typ {
	case "model", "dataset", "space":
		return nil
	}
	return fmt.Errorf("fakehub: repo type %q: want model, dataset or space", typ)
}

// Commit adds a commit holding exactly files (path -> File) to the
// repository (creating it), points each of refs (branches or tags) at it,
// and returns its 40-hex id. Contents are hashed here, once.
func (h *Hub) Commit(typ, id string, files map[string]File, refs ...string) (string, error) {
	if err := checkType(typ); err != nil {
		return "", err
	}
	entries := map[string]*fileEntry{}
	paths := make([]string, 0, len(files))
	for p, f := range files {
		if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") {
			return "", fmt.Errorf("fakehub: bad file path %q", p)
		}
		e := &fileEntry{content: f.Content, lfs: f.LFS}
		var err error
		if f.LFS {
			e.etag, err = hashContent(sha256.New(), f.Content, "")
		} else {
			e.etag, err = hashContent(sha1.New(), f.Content, "blob "+strconv.FormatInt(f.Content.Size(), 10)+"\x00")
		}
		if err != nil {
			return "", fmt.Errorf("fakehub: hash %s: %w", p, err)
		}
		entries[p] = e
		paths = append(paths, p)
	}
	sort.Strings(paths)
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.repos[key(typ, id)]
	if r == nil {
		r = &repo{typ: typ, id: id, commits: map[string]map[string]*fileEntry{}, refs: map[string]string{}}
		h.repos[key(typ, id)] = r
	}
	r.seq++
	c := sha1.New()
	fmt.Fprintf(c, "%s\x00%s\x00%d\x00", typ, id, r.seq)
	for _, p := range paths {
		fmt.Fprintf(c, "%s\x00%s\n", p, entries[p].etag)
		if e := entries[p]; e.lfs && h.blobs[e.etag] == nil {
			h.blobs[e.etag] = &blob{content: e.content, sha256: e.etag}
		}
	}
	commit := hex.EncodeToString(c.Sum(nil))
	r.commits[commit] = entries
	for _, ref := range refs {
		r.refs[ref] = commit
	}
	return commit, nil
}

// AddDir adds a commit made of every regular file under dir; files of at
// least lfsMin bytes are LFS files. It returns the commit id.
func (h *Hub) AddDir(typ, id, dir string, lfsMin int64, refs ...string) (string, error) {
	files := map[string]File{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = File{Content: testindex.Bytes(b), LFS: int64(len(b)) >= lfsMin}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("fakehub: read %s: %w", dir, err)
	}
	return h.Commit(typ, id, files, refs...)
}

// Bytes wraps in-memory content.
func Bytes(b []byte) Content { return testindex.Bytes(b) }

func hashContent(hh interface {
	io.Writer
	Sum([]byte) []byte
}, c Content, header string) (string, error) {
	io.WriteString(hh, header)
	if _, err := io.Copy(hh, io.NewSectionReader(c, 0, c.Size())); err != nil {
		return "", err
	}
	return hex.EncodeToString(hh.Sum(nil)), nil
}

// SetRef points a branch or tag at a commit.
func (h *Hub) SetRef(typ, id, ref, commit string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.repos[key(typ, id)]
	if r == nil || r.commits[commit] == nil {
		return fmt.Errorf("fakehub: no commit %s in %s %s", commit, typ, id)
	}
	r.refs[ref] = commit
	return nil
}

// Rename moves a repository to newID; requests for the old id get a 307 to
// the new one.
func (h *Hub) Rename(typ, oldID, newID string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.repos[key(typ, oldID)]
	if r == nil {
		return fmt.Errorf("fakehub: no %s %s", typ, oldID)
	}
	delete(h.repos, key(typ, oldID))
	r.id = newID
	h.repos[key(typ, newID)] = r
	h.renamed[key(typ, oldID)] = newID
	return nil
}

// RequireToken makes a repository private: requests without
// "Authorization: Bearer <token>" get 401.
func (h *Hub) RequireToken(typ, id, token string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.repos[key(typ, id)]
	if r == nil {
		return fmt.Errorf("fakehub: no %s %s", typ, id)
	}
	r.token = token
	return nil
}

// ETag returns the ETag the hub reports for a file at a revision: the
// sha256 of an LFS file, the git blob sha1 of another.
func (h *Hub) ETag(typ, id, rev, path string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.repos[key(typ, id)]
	if r == nil {
		return "", fmt.Errorf("fakehub: no %s %s", typ, id)
	}
	c, ok := r.refs[rev]
	if !ok {
		c = rev
	}
	e := r.commits[c][path]
	if e == nil {
		return "", fmt.Errorf("fakehub: no %s at %s in %s", path, rev, id)
	}
	return e.etag, nil
}

// FaultBlob sets (or with the zero Fault clears) the CDN fault of the blob
// with this sha256.
func (h *Hub) FaultBlob(sha string, f Fault) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.blobs[sha]
	if b == nil {
		return fmt.Errorf("fakehub: no blob %s", sha)
	}
	b.fault = f
	b.reqs.Store(0)
	return nil
}

// FaultResolve makes the hub answer status to the first times resolve
// requests (HEAD or GET; 0 = all) for path in the repository, at any
// revision. Status 0 clears it.
func (h *Hub) FaultResolve(typ, id, path string, status, times int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := key(typ, id) + ":" + path
	if status == 0 {
		delete(h.resFaults, k)
		return
	}
	h.resFaults[k] = resolveFault{status: status, times: times}
}

// Stats returns the totals so far.
func (h *Hub) Stats() Stats {
	return Stats{
		HubHEAD: h.hubHEAD.Load(), HubGET: h.hubGET.Load(), API: h.api.Load(),
		CDNRequests: h.cdnRequests.Load(), CDNBytes: h.cdnBytes.Load(), CDNWithAuth: h.cdnWithAuth.Load(),
	}
}

// BlobStats returns the CDN counters of one blob (zero if unknown).
// Requests counts since the last FaultBlob for it.
func (h *Hub) BlobStats(sha string) BlobStat {
	h.mu.Lock()
	b := h.blobs[sha]
	h.mu.Unlock()
	if b == nil {
		return BlobStat{}
	}
	return BlobStat{Requests: b.reqs.Load(), Bytes: b.bytes.Load()}
}

// ServeHTTP serves the hub: the resolve endpoint and the revision API.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	segs, err := splitPath(r.URL.EscapedPath())
	if err != nil || len(segs) == 0 {
		http.NotFound(w, r)
		return
	}
	if segs[0] == "api" {
		h.serveAPI(w, r, segs[1:])
		return
	}
	typ := "model"
	switch segs[0] {
	case "datasets":
		typ, segs = "dataset", segs[1:]
	case "spaces":
		typ, segs = "space", segs[1:]
	}
	i := indexOf(segs, "resolve", 3)
	if i < 1 || len(segs) < i+3 {
		http.NotFound(w, r)
		return
	}
	h.serveResolve(w, r, typ, strings.Join(segs[:i], "/"), segs[i+1], strings.Join(segs[i+2:], "/"))
}

// splitPath splits an escaped URL path into unescaped segments, so a
// revision sent as "refs%2Fpr%2F1" stays one segment.
func splitPath(escaped string) ([]string, error) {
	parts := strings.Split(strings.Trim(escaped, "/"), "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, err
		}
		parts[i] = u
	}
	return parts, nil
}

// indexOf finds s among the first max+1 elements (repo ids have one or two
// segments).
func indexOf(segs []string, s string, max int) int {
	for i := 1; i < len(segs) && i < max; i++ {
		if segs[i] == s {
			return i
		}
	}
	return -1
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// lookup finds the repository and checks the token. It answers the request
// itself (redirect or error) and returns nil when the caller should stop.
// rest is the escaped path after the repo id, for renamed-repo redirects.
func (h *Hub) lookup(w http.ResponseWriter, r *http.Request, typ, id, before, rest string) *repo {
	h.mu.Lock()
	rp := h.repos[key(typ, id)]
	newID, moved := h.renamed[key(typ, id)]
	var token string
	if rp != nil {
		token = rp.token
	}
	h.mu.Unlock()
	auth := r.Header.Get("Authorization")
	if rp == nil && moved {
		loc := h.opt.BasePath + before + escapeID(newID) + rest
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return nil
	}
	if rp == nil {
		// Like the hub: without credentials a missing repository and a
		// private one look the same.
		if auth == "" {
			hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository Not Found for url: "+r.URL.Path+". Please make sure you specified the correct `repo_id` and `repo_type`. If you are trying to access a private or gated repo, make sure you are authenticated.")
			return nil
		}
		hubError(w, http.StatusNotFound, "RepoNotFound", "Repository Not Found")
		return nil
	}
	if token != "" && auth != "Bearer "+token {
		if auth == "" {
			hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository Not Found: authentication required")
		} else {
			hubError(w, http.StatusUnauthorized, "", "Invalid credentials in Authorization header")
		}
		return nil
	}
	return rp
}

func escapeID(id string) string {
	parts := strings.Split(id, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func (h *Hub) serveResolve(w http.ResponseWriter, r *http.Request, typ, id, rev, path string) {
	switch r.Method {
	case http.MethodHead:
		h.hubHEAD.Add(1)
	case http.MethodGet:
		h.hubGET.Add(1)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	before := "/"
	if typ != "model" {
		before = "/" + typ + "s/"
	}
	rest := "/resolve/" + url.PathEscape(rev) + "/" + escapeID(path)
	rp := h.lookup(w, r, typ, id, before, rest)
	if rp == nil {
		return
	}
	h.mu.Lock()
	fk := key(typ, id) + ":" + path
	if f, ok := h.resFaults[fk]; ok && (f.times == 0 || f.seen < f.times) {
		f.seen++
		h.resFaults[fk] = f
		h.mu.Unlock()
		hubError(w, f.status, "", "injected status "+strconv.Itoa(f.status))
		return
	}
	commit, files := resolveRev(rp, rev)
	var e *fileEntry
	if files != nil {
		e = files[path]
	}
	cdn := h.cdnURL
	h.mu.Unlock()
	if files == nil {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	w.Header().Set("X-Repo-Commit", commit)
	if e == nil {
		hubError(w, http.StatusNotFound, "EntryNotFound", path+" does not exist on \""+rev+"\"")
		return
	}
	if e.lfs {
		w.Header().Set("X-Linked-Etag", `"`+e.etag+`"`)
		w.Header().Set("X-Linked-Size", strconv.FormatInt(e.content.Size(), 10))
		w.Header().Set("ETag", `"`+e.etag+`"`)
		w.Header().Set("Location", cdn+"/blobs/"+e.etag+"?X-Amz-Signature=fakesig&X-Amz-Expires=3600")
		w.WriteHeader(http.StatusFound)
		return
	}
	if h.opt.ResolveCache {
		loc := h.opt.BasePath + "/api/resolve-cache/" + typ + "s/" + escapeID(rp.id) + "/" + commit + "/" + escapeID(path)
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	h.serveSmall(w, r, e)
}

// serveSmall serves a non-LFS file's bytes with its ETag (X-Repo-Commit is
// already set).
func (h *Hub) serveSmall(w http.ResponseWriter, r *http.Request, e *fileEntry) {
	etag := `"` + e.etag + `"`
	if h.opt.WeakETags {
		etag = "W/" + etag
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(e.content, 0, e.content.Size()))
}

// resolveRev maps a branch, tag or commit to the commit and its files;
// nil files if unknown. Called with h.mu held.
func resolveRev(rp *repo, rev string) (string, map[string]*fileEntry) {
	if c, ok := rp.refs[rev]; ok {
		return c, rp.commits[c]
	}
	if files, ok := rp.commits[rev]; ok {
		return rev, files
	}
	return "", nil
}

func (h *Hub) serveAPI(w http.ResponseWriter, r *http.Request, segs []string) {
	if len(segs) > 0 && segs[0] == "resolve-cache" {
		h.serveResolveCache(w, r, segs[1:])
		return
	}
	h.api.Add(1)
	if r.Method != http.MethodGet || len(segs) < 4 {
		http.NotFound(w, r)
		return
	}
	var typ string
	switch segs[0] {
	case "models":
		typ = "model"
	case "datasets":
		typ = "dataset"
	case "spaces":
		typ = "space"
	default:
		http.NotFound(w, r)
		return
	}
	segs = segs[1:]
	i := indexOf(segs, "revision", 3)
	if i < 1 || len(segs) != i+2 {
		http.NotFound(w, r)
		return
	}
	id, rev := strings.Join(segs[:i], "/"), segs[i+1]
	rp := h.lookup(w, r, typ, id, "/api/"+typ+"s/", "/revision/"+url.PathEscape(rev))
	if rp == nil {
		return
	}
	h.mu.Lock()
	commit, files := resolveRev(rp, rev)
	type sibling struct {
		RFilename string `json:"rfilename"`
	}
	sib := []sibling{}
	for p := range files {
		sib = append(sib, sibling{p})
	}
	h.mu.Unlock()
	if files == nil {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	sort.Slice(sib, func(i, j int) bool { return sib[i].RFilename < sib[j].RFilename })
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"_id": commit[:24], "id": id, "sha": commit, "siblings": sib})
}

// CDN returns the handler for the CDN host: GET and HEAD of
// /blobs/{sha256}, with ranges and If-Range against the strong ETag
// "<sha256>", and the blob's fault applied.
func (h *Hub) CDN() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.cdnRequests.Add(1)
		if r.Header.Get("Authorization") != "" {
			h.cdnWithAuth.Add(1)
		}
		sha, ok := strings.CutPrefix(r.URL.Path, "/blobs/")
		h.mu.Lock()
		b := h.blobs[sha]
		h.mu.Unlock()
		if !ok || b == nil {
			http.NotFound(w, r)
			return
		}
		n := b.reqs.Add(1)
		h.mu.Lock()
		f := b.fault
		h.mu.Unlock()
		if f.Times > 0 && n > int64(f.Times) {
			f = Fault{}
		}
		if f.Status != 0 {
			http.Error(w, "injected status", f.Status)
			return
		}
		w.Header().Set("ETag", `"`+b.sha256+`"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		rs := &faultReader{r: r, w: w, c: b.content, f: f, size: b.content.Size(), count: func(n int) {
			b.bytes.Add(int64(n))
			h.cdnBytes.Add(int64(n))
		}}
		http.ServeContent(w, r, "", time.Time{}, rs)
	})
}

// faultReader is the io.ReadSeeker ServeContent reads a blob through; it
// applies the fault at absolute offsets and counts bytes read for the body.
type faultReader struct {
	r     *http.Request
	w     http.ResponseWriter
	c     Content
	f     Fault
	size  int64
	off   int64
	count func(int)
}

var errDropped = errors.New("fakehub: injected drop")

func (fr *faultReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += fr.off
	case io.SeekEnd:
		offset += fr.size
	}
	if offset < 0 {
		return 0, errors.New("fakehub: negative seek")
	}
	fr.off = offset
	return offset, nil
}

func (fr *faultReader) Read(p []byte) (int, error) {
	if fr.off >= fr.size {
		return 0, io.EOF
	}
	if int64(len(p)) > fr.size-fr.off {
		p = p[:fr.size-fr.off]
	}
	for _, at := range []int64{fr.f.StallAt, fr.f.DropAt} {
		if at > 0 && fr.off < at && fr.off+int64(len(p)) > at {
			p = p[:at-fr.off]
		}
	}
	if fr.f.DropAt > 0 && fr.off == fr.f.DropAt {
		// Headers and the bytes so far reach the client, then the
		// connection closes without a clean end of body.
		if fl, ok := fr.w.(http.Flusher); ok {
			fl.Flush()
		}
		panic(http.ErrAbortHandler)
	}
	if fr.f.StallAt > 0 && fr.off == fr.f.StallAt {
		// Push out what was written so far, so the client really holds
		// the bytes before the stall.
		if fl, ok := fr.w.(http.Flusher); ok {
			fl.Flush()
		}
		<-fr.r.Context().Done()
		return 0, errDropped
	}
	n, err := fr.c.ReadAt(p, fr.off)
	if fr.f.Corrupt && fr.f.CorruptAt >= fr.off && fr.f.CorruptAt < fr.off+int64(n) {
		p[fr.f.CorruptAt-fr.off] ^= 0xff
	}
	fr.off += int64(n)
	fr.count(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Servers is a hub and its CDN running on loopback.
type Servers struct {
	Hub    *Hub
	HubSrv *httptest.Server
	CDNSrv *httptest.Server
	// URL is the hub's base URL (HF_ENDPOINT); CDNURL the CDN's.
	URL, CDNURL string
}

// Close stops both servers.
func (s *Servers) Close() {
	s.HubSrv.Close()
	s.CDNSrv.Close()
}

// Start serves h on 127.0.0.1 and its CDN on a different loopback host name
// (127.0.0.2, else "localhost"), and points h's redirects at the CDN.
func Start(h *Hub) (*Servers, error) {
	cdn := httptest.NewUnstartedServer(h.CDN())
	cdnHost := "127.0.0.2"
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		ln, err = net.Listen("tcp", "localhost:0")
		cdnHost = "localhost"
		if err != nil {
			return nil, fmt.Errorf("fakehub: listen for the CDN: %w", err)
		}
	}
	cdn.Listener.Close()
	cdn.Listener = ln
	cdn.Start()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	cdnURL := "http://" + net.JoinHostPort(cdnHost, port)
	h.SetCDNURL(cdnURL)
	hub := httptest.NewServer(h)
	return &Servers{Hub: h, HubSrv: hub, CDNSrv: cdn, URL: hub.URL, CDNURL: cdnURL}, nil
}

// serveResolveCache serves /api/resolve-cache/{type}s/{repo}/{commit}/{path}
// (the target of ResolveCache redirects): a non-LFS file at a commit.
func (h *Hub) serveResolveCache(w http.ResponseWriter, r *http.Request, segs []string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if len(segs) < 4 {
		http.NotFound(w, r)
		return
	}
	typ := strings.TrimSuffix(segs[0], "s")
	segs = segs[1:]
	i := 1
	if !isCommit(segs[i]) {
		i = 2
	}
	if i >= len(segs)-1 || !isCommit(segs[i]) {
		http.NotFound(w, r)
		return
	}
	id, commit, path := strings.Join(segs[:i], "/"), segs[i], strings.Join(segs[i+1:], "/")
	rp := h.lookup(w, r, typ, id, "/api/resolve-cache/"+typ+"s/", "/"+commit+"/"+escapeID(path))
	if rp == nil {
		return
	}
	h.mu.Lock()
	e := rp.commits[commit][path]
	h.mu.Unlock()
	if e == nil || e.lfs {
		hubError(w, http.StatusNotFound, "EntryNotFound", path+" not in the resolve cache")
		return
	}
	w.Header().Set("X-Repo-Commit", commit)
	h.serveSmall(w, r, e)
}

func isCommit(s string) bool {
	if len(s) != 40 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}
