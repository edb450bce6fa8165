// Package models puts Hugging Face repository files on the volume in the
// cache layout huggingface_hub reads (HF_HUB_CACHE), so that a handler can
// load them with HF_HUB_OFFLINE=1.
//
// For each Model, Sync resolves the revision to a commit and each file to
// its ETag and size the way huggingface_hub does: a HEAD of
// {endpoint}/{prefix}{repo}/resolve/{revision}/{path} (prefix "" for models,
// "datasets/" or "spaces/"), reading X-Repo-Commit, X-Linked-Etag or ETag
// and X-Linked-Size or Content-Length. Relative redirects (renamed
// repositories) are followed with credentials; the cross-host redirect to
// the CDN is not followed for the HEAD, whose metadata is on the first
// answer. Glob patterns are expanded against the file list of the revision
// API ({endpoint}/api/{models|datasets|spaces}/{repo}/revision/{revision});
// see MatchPattern for the syntax. Once the commit is known, every file is
// asked for at that commit, so a branch that moves meanwhile cannot mix two
// commits in one snapshot.
//
// Blobs are downloaded with the fetch package from the resolve URL pinned
// to the commit: resumable, retried, verified in the stream (sha256 for LFS
// files, whose ETag is their sha256; git blob sha1 for the others, whose
// ETag is that; size only for an ETag that is neither). The fetcher drops
// credentials at the CDN redirect.
//
// Layout (huggingface_hub's): {hub}/models--{org}--{name}/ (datasets--,
// spaces--) holding blobs/{etag}, snapshots/{commit}/{path} as relative
// symlinks to ../../blobs/{etag} (one more "../" per directory level of
// path), refs/{revision} holding the commit (only when the revision is not
// the commit itself), and .no_exist/{commit}/{path}, an empty file, for a
// file the hub says does not exist at that commit. Everything appears
// atomically: blobs by the fetcher's verified rename, symlinks and refs by
// a temporary name renamed into place. refs/{revision} is written last, so
// a reader that finds it finds every file of the snapshot linked or recorded
// as absent (it is not written when a download failed). Blobs are shared by
// every revision of a repository: a blob already present is not fetched
// again (the fetcher only ever gives a blob its final name after
// verification, so its presence with the right size is proof enough).
//
// Concurrency: a Syncer is safe for concurrent use, but two Syncs of the
// same repository (in one process or on two hosts) must not overlap: they
// would share part files (see fetch). The reconciler serialises them with
// the volume lock; races are still harmless for readers, since every name
// appears complete and blobs are named by content.
//
// A revision that is a commit, with a snapshot that already links every
// listed path, is not asked of the hub at all: commits never change.
//
// Check (cheap: a Readlink and a Stat per file), Verify (hashes every
// blob) and GC need no network.
package models

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/bootstrap/redact"
)

// DefaultEndpoint is the hub used when HF_ENDPOINT is not set.
const DefaultEndpoint = "https://huggingface.co"

// EndpointFromEnv returns $HF_ENDPOINT without a trailing slash, or
// DefaultEndpoint.
func EndpointFromEnv(getenv func(string) string) string {
	if e := strings.TrimRight(strings.TrimSpace(getenv("HF_ENDPOINT")), "/"); e != "" {
		return e
	}
	return DefaultEndpoint
}

// Model is one [[model]] of the manifest.
type Model struct {
	Repo     string   // "org/name" or "name"
	Revision string   // branch, tag or 40-hex commit; "" means "main"
	RepoType string   // model, dataset or space; "" means model
	Files    []string // paths or glob patterns (see MatchPattern)
	Group    string
}

func (m Model) normalized() Model {
	if m.Revision == "" {
		m.Revision = "main"
	}
	if m.RepoType == "" {
		m.RepoType = "model"
	}
	return m
}

func (m Model) validate() error {
	if err := checkRepoType(m.RepoType); err != nil {
		return err
	}
	if err := checkRepoID(m.Repo); err != nil {
		return err
	}
	if err := checkRevision(m.Revision); err != nil {
		return err
	}
	if len(m.Files) == 0 {
		return errors.New("no files listed")
	}
	for _, f := range m.Files {
		if IsPattern(f) {
			if _, err := MatchPattern(f, ""); err != nil {
				return err
			}
			if strings.HasPrefix(f, "/") || strings.Contains(f, "..") {
				return fmt.Errorf("pattern %q must be relative and not contain \"..\"", f)
			}
			continue
		}
		if err := checkRepoPath(f); err != nil {
			return fmt.Errorf("file: %w", err)
		}
	}
	return nil
}

// FileInfo is one file of a snapshot.
type FileInfo struct {
	Path string `json:"path"`
	ETag string `json:"etag"` // the blob's name
	Size int64  `json:"size"`
}

// Snapshot is what a model resolved to. The reconciler may keep it (in
// state.json) and pass it to Check, which can then also check sizes and
// knows what glob patterns expanded to.
type Snapshot struct {
	Commit string     `json:"commit"`
	Files  []FileInfo `json:"files"`
}

// Result is one model's outcome.
type Result struct {
	Model    Model
	Snapshot Snapshot
	// Missing lists files the hub says do not exist at the commit (each
	// recorded under .no_exist/); Err is then an EntryNotFound *Error.
	Missing []string
	// Offline is true when the revision is a commit whose snapshot was
	// already complete: nothing was asked of the hub.
	Offline bool
	// Downloaded counts blobs fetched now (the rest were present); a blob
	// two models of one Sync share counts for the first.
	Downloaded int
	// Err is nil when every file is in place; otherwise an *Error whose
	// message is fit to be a degraded group's reason.
	Err error
}

// Options configures a Syncer.
type Options struct {
	// Endpoint is the hub's base URL (HF_ENDPOINT); "" means
	// DefaultEndpoint.
	Endpoint string
	// HubDir is the hub cache directory (<volume>/models/hub); created if
	// missing.
	HubDir string
	// Fetcher downloads the blobs. Required.
	Fetcher *fetch.Fetcher
	// Credentials supplies the Authorization header of metadata requests
	// (the same the Fetcher was given: HF_TOKEN for the endpoint's host
	// only); nil sends none.
	Credentials *fetch.Credentials
	// Transport carries metadata requests; nil: a clone of
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Logger; nil logs nothing.
	Logger *zap.Logger
	// Jobs is how many metadata requests and link operations are in
	// flight at once (default 16: on a network filesystem each is a round
	// trip).
	Jobs int
	// MaxAttempts per metadata request for 429, 5xx and network errors
	// (default 5); Backoff is the first delay, doubled each time (default
	// 1s), jittered to 50-100%.
	MaxAttempts int
	Backoff     time.Duration
	// Sleep waits between attempts; it must return ctx.Err() when ctx ends
	// first. Tests inject a fast one.
	Sleep func(ctx context.Context, d time.Duration) error
	// AllowHTTP lists endpoint hosts that may be plain http (loopback
	// always may).
	AllowHTTP []string
	// UserAgent defaults to "volboot".
	UserAgent string
}

// Syncer fetches models. Create it with New.
type Syncer struct {
	endpoint string
	host     string
	hubDir   string
	fetcher  *fetch.Fetcher
	creds    *fetch.Credentials
	client   *hubClient
	log      *zap.Logger
	jobs     int
}

// New checks opt and returns a Syncer.
func New(opt Options) (*Syncer, error) {
	if opt.Fetcher == nil {
		return nil, errors.New("models: no fetcher")
	}
	if opt.HubDir == "" {
		return nil, errors.New("models: no hub cache directory")
	}
	ep := strings.TrimRight(opt.Endpoint, "/")
	if ep == "" {
		ep = DefaultEndpoint
	}
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" {
		return nil, fmt.Errorf("HF_ENDPOINT %q is not an http(s) URL like https://huggingface.co", redact.URL(ep))
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) && !contains(opt.AllowHTTP, u.Hostname()) {
		return nil, fmt.Errorf("HF_ENDPOINT %s is plain http: use https, or allow the host explicitly", redact.URL(ep))
	}
	log := opt.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if opt.Jobs <= 0 {
		opt.Jobs = 16
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = 5
	}
	if opt.Backoff <= 0 {
		opt.Backoff = time.Second
	}
	if opt.Sleep == nil {
		opt.Sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if opt.UserAgent == "" {
		opt.UserAgent = "volboot"
	}
	rt := opt.Transport
	if rt == nil {
		rt = http.DefaultTransport.(*http.Transport).Clone()
	}
	creds := opt.Credentials
	s := &Syncer{endpoint: ep, host: strings.ToLower(u.Hostname()), hubDir: opt.HubDir, fetcher: opt.Fetcher, creds: creds, log: log, jobs: opt.Jobs}
	s.client = &hubClient{
		rt: rt,
		authHeader: func(host string) (string, bool) {
			c, ok := creds.For(host)
			if !ok {
				return "", false
			}
			if c.Token != "" && c.Username == "" && c.Password == "" {
				return "Bearer " + c.Token, true
			}
			return basicAuth(c.Username, c.Password), true
		},
		log: log, maxAttempts: opt.MaxAttempts, backoff: opt.Backoff, sleep: opt.Sleep, userAgent: opt.UserAgent,
	}
	return s, nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// plannedFile is a file whose metadata is known.
type plannedFile struct {
	path string
	meta meta
	item int // index into the fetch items
}

// plan is one model on its way through Sync.
type plan struct {
	m       Model
	repoDir string
	commit  string
	files   []plannedFile
	missing []string
	offline bool
	err     error
}

func (p *plan) fail(kind ErrorKind, path string, err error) {
	p.err = &Error{Kind: kind, Repo: p.m.Repo, RepoType: p.m.RepoType, Revision: p.m.Revision, Path: path, Err: err}
}

// Sync makes every model's files present, returning one Result per model
// in order. Models fail independently: one model's error never stops
// another. Cancelling ctx stops everything; partial downloads stay for the
// next Sync.
func (s *Syncer) Sync(ctx context.Context, models []Model) []Result {
	plans := make([]*plan, len(models))
	sem := make(chan struct{}, s.jobs)
	var wg sync.WaitGroup
	for i, m := range models {
		m = m.normalized()
		p := &plan{m: m}
		plans[i] = p
		if err := m.validate(); err != nil {
			p.fail(Invalid, "", err)
			continue
		}
		p.repoDir = RepoDir(s.hubDir, m.RepoType, m.Repo)
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.resolve(ctx, p, sem)
		}()
	}
	wg.Wait()

	// One Fetch for every blob of every model: the fetcher's parallelism
	// and progress then span them all. Models of one repository may share
	// blobs; each blob is one item.
	var items []fetch.Item
	byDest := map[string]int{}
	for _, p := range plans {
		if p.err != nil || p.offline {
			continue
		}
		blobs := filepath.Join(p.repoDir, "blobs")
		if err := os.MkdirAll(blobs, 0o755); err != nil {
			p.fail(Local, "", fmt.Errorf("create %s: %w", blobs, err))
			continue
		}
		for j := range p.files {
			f := &p.files[j]
			dest := filepath.Join(blobs, f.meta.etag)
			if k, ok := byDest[dest]; ok {
				f.item = k
				continue
			}
			it, err := s.item(p, f, dest)
			if err != nil {
				p.fail(Invalid, f.path, err)
				break
			}
			f.item = len(items)
			byDest[dest] = f.item
			items = append(items, it)
		}
	}
	var fetched []fetch.Result
	if len(items) > 0 {
		fetched, _ = s.fetcher.Fetch(ctx, items)
	}

	results := make([]Result, len(plans))
	counted := map[int]bool{} // a blob two models share counts once
	for i, p := range plans {
		r := &results[i]
		r.Model = p.m
		r.Offline = p.offline
		if p.err == nil && !p.offline {
			for _, f := range p.files {
				fr := fetched[f.item]
				if fr.Err != nil {
					p.fail(Download, f.path, fr.Err)
					break
				}
				if !fr.Cached && !counted[f.item] {
					counted[f.item] = true
					r.Downloaded++
				}
			}
			if p.err == nil {
				s.link(ctx, p)
			}
		}
		r.Snapshot.Commit = p.commit
		for _, f := range p.files {
			r.Snapshot.Files = append(r.Snapshot.Files, FileInfo{Path: f.path, ETag: f.meta.etag, Size: f.meta.size})
		}
		r.Missing = p.missing
		if p.err == nil && len(p.missing) > 0 {
			p.err = &Error{Kind: EntryNotFound, Repo: p.m.Repo, RepoType: p.m.RepoType, Revision: p.m.Revision,
				Path: strings.Join(p.missing, ", "), Err: fmt.Errorf("commit %s", p.commit)}
		}
		r.Err = p.err
		if p.err != nil {
			s.log.Warn("model not available", zap.String("repo", p.m.Repo), zap.String("revision", p.m.Revision), zap.String("group", p.m.Group), zap.Error(p.err))
		} else {
			s.log.Info("model ready", zap.String("repo", p.m.Repo), zap.String("revision", p.m.Revision), zap.String("commit", p.commit),
				zap.Int("files", len(p.files)), zap.Int("downloaded", r.Downloaded), zap.Bool("offline", p.offline))
		}
	}
	return results
}

// item makes the fetch item of one blob.
func (s *Syncer) item(p *plan, f *plannedFile, dest string) (fetch.Item, error) {
	d := fetch.Digest{Kind: fetch.SizeOnly}
	switch {
	case isHex(f.meta.etag, 64):
		d = fetch.Digest{Kind: fetch.SHA256, Hex: f.meta.etag}
	case isHex(f.meta.etag, 40):
		d = fetch.Digest{Kind: fetch.GitBlobSHA1, Hex: f.meta.etag}
	default:
		s.log.Warn("ETag is neither a sha256 nor a git blob id: verifying the size only",
			zap.String("repo", p.m.Repo), zap.String("file", f.path), zap.String("etag", f.meta.etag))
	}
	if f.meta.size < 0 && d.Kind != fetch.SHA256 {
		return fetch.Item{}, fmt.Errorf("%w: the hub sent no size for %s", errBadAnswer, f.path)
	}
	return fetch.Item{
		Name:   p.m.Repo + "/" + f.path,
		URLs:   []string{s.resolveURL(p.m, p.commit, f.path)},
		Size:   f.meta.size,
		Digest: d,
		Dest:   dest,
		// Explicit, so that an opaque ETag containing no '.' still gets a
		// part name no other blob can have.
		Part: dest + ".part",
	}, nil
}

var errBadAnswer = errors.New("unusable answer from the hub")

func (s *Syncer) resolveURL(m Model, rev, p string) string {
	return s.endpoint + "/" + urlPrefix(m.RepoType) + escapePath(m.Repo) + "/resolve/" + pathEscape(rev) + "/" + escapePath(p)
}

func (s *Syncer) apiURL(m Model) string {
	return s.endpoint + "/api/" + m.RepoType + "s/" + escapePath(m.Repo) + "/revision/" + pathEscape(m.Revision)
}

// resolve fills p.commit and p.files (or p.err), asking the hub unless the
// revision is a commit whose snapshot is already complete.
func (s *Syncer) resolve(ctx context.Context, p *plan, sem chan struct{}) {
	m := p.m
	hasPattern := false
	for _, f := range m.Files {
		hasPattern = hasPattern || IsPattern(f)
	}
	if IsCommit(m.Revision) && !hasPattern && s.offlineComplete(p) {
		return
	}
	acquire := func() bool {
		select {
		case sem <- struct{}{}:
			return true
		case <-ctx.Done():
			return false
		}
	}
	release := func() { <-sem }

	var paths []string
	seen := map[string]bool{}
	add := func(f string) {
		if !seen[f] {
			seen[f] = true
			paths = append(paths, f)
		}
	}
	if hasPattern {
		if !acquire() {
			p.fail(Network, "", ctx.Err())
			return
		}
		ri, err := s.client.revisionInfo(ctx, s.apiURL(m))
		release()
		if err != nil {
			p.err = s.classify(m, "", err)
			return
		}
		p.commit = ri.SHA
		for _, f := range m.Files {
			if !IsPattern(f) {
				add(f)
				continue
			}
			n := 0
			for _, sib := range ri.Siblings {
				if ok, _ := MatchPattern(f, sib.RFilename); ok {
					add(sib.RFilename)
					n++
				}
			}
			if n == 0 {
				p.fail(EntryNotFound, f, fmt.Errorf("the pattern matches no file of commit %s", ri.SHA))
				return
			}
		}
	} else {
		for _, f := range m.Files {
			add(f)
		}
	}
	if p.commit == "" && IsCommit(m.Revision) {
		p.commit = m.Revision
	}

	metas := make([]meta, len(paths))
	found := make([]bool, len(paths))
	errs := make([]error, len(paths))
	headOne := func(i int, rev string) {
		md, err := s.client.head(ctx, s.resolveURL(m, rev, paths[i]))
		var he *httpError
		switch {
		case err == nil:
			metas[i], found[i] = md, true
		case errors.As(err, &he) && he.status == http.StatusNotFound && he.code == "EntryNotFound" && IsCommit(he.commit):
			metas[i].commit = he.commit
		default:
			errs[i] = err
		}
	}
	start := 0
	if p.commit == "" {
		// A branch or tag: the first HEAD tells the commit; the rest ask
		// for that commit, so the snapshot is one commit's files.
		if !acquire() {
			p.fail(Network, "", ctx.Err())
			return
		}
		headOne(0, m.Revision)
		release()
		if errs[0] != nil {
			p.err = s.classify(m, paths[0], errs[0])
			return
		}
		p.commit = metas[0].commit
		start = 1
	}
	var wg sync.WaitGroup
	for i := start; i < len(paths); i++ {
		if !acquire() {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release()
			headOne(i, p.commit)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		p.fail(Network, "", ctx.Err())
		return
	}
	for i, pth := range paths {
		if errs[i] != nil {
			p.err = s.classify(m, pth, errs[i])
			return
		}
		if metas[i].commit != p.commit {
			p.fail(Invalid, pth, fmt.Errorf("%w: the hub answered commit %s for a request of commit %s", errBadAnswer, metas[i].commit, p.commit))
			return
		}
		if !found[i] {
			p.missing = append(p.missing, pth)
			continue
		}
		p.files = append(p.files, plannedFile{path: pth, meta: metas[i]})
	}
}

// offlineComplete reports whether the snapshot of p's commit already links
// every listed file to an existing blob, and if so fills p from disk.
func (s *Syncer) offlineComplete(p *plan) bool {
	var files []plannedFile
	for _, f := range p.m.Files {
		lp := snapshotPath(p.repoDir, p.m.Revision, f)
		target, err := os.Readlink(lp)
		if err != nil || target != blobTarget(f, path.Base(filepath.ToSlash(target))) {
			return false
		}
		fi, err := os.Stat(lp)
		if err != nil || !fi.Mode().IsRegular() {
			return false
		}
		files = append(files, plannedFile{path: f, meta: meta{commit: p.m.Revision, etag: path.Base(target), size: fi.Size()}})
	}
	p.commit, p.files, p.offline = p.m.Revision, files, true
	return true
}

// classify turns a metadata error into the model's *Error.
func (s *Syncer) classify(m Model, file string, err error) error {
	e := &Error{Repo: m.Repo, RepoType: m.RepoType, Revision: m.Revision, Err: err}
	var he *httpError
	switch {
	case errors.As(err, &he):
		e.Status = he.status
		switch {
		case he.status == http.StatusUnauthorized || he.status == http.StatusForbidden:
			e.Kind = Unauthorized
			_, has := s.creds.For(s.host)
			e.NoToken = !has
			e.Hidden = he.code == "RepoNotFound"
			e.Gated = he.code == "GatedRepo"
		case he.status == http.StatusNotFound && he.code == "RepoNotFound":
			e.Kind = RepoNotFound
		case he.status == http.StatusNotFound && he.code == "RevisionNotFound":
			e.Kind = RevisionNotFound
		case he.status == http.StatusNotFound && file != "":
			e.Kind, e.Path = EntryNotFound, file
		case he.status == http.StatusNotFound:
			e.Kind = RepoNotFound
		default:
			e.Kind, e.Path = Network, file
		}
	case errors.Is(err, errBadAnswer):
		e.Kind, e.Path = Invalid, file
	default:
		e.Kind, e.Path = Network, file
	}
	// The hub's own text repeats what the message already says.
	if e.Kind == RepoNotFound || e.Kind == RevisionNotFound || e.Kind == EntryNotFound {
		e.Err = nil
	}
	return e
}

// link writes the snapshot links, the .no_exist markers and then the ref,
// keeping up to s.jobs operations in flight.
func (s *Syncer) link(ctx context.Context, p *plan) {
	type op struct{ dst, target string }
	var ops []op
	dirs := map[string]bool{}
	for _, f := range p.files {
		lp := snapshotPath(p.repoDir, p.commit, f.path)
		ops = append(ops, op{lp, blobTarget(f.path, f.meta.etag)})
		dirs[filepath.Dir(lp)] = true
	}
	for _, miss := range p.missing {
		np := filepath.Join(p.repoDir, ".no_exist", p.commit, filepath.FromSlash(miss))
		ops = append(ops, op{np, ""})
		dirs[filepath.Dir(np)] = true
	}
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	run := func(n int, fn func(i int) error) error {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(s.jobs)
		for i := 0; i < n; i++ {
			g.Go(func() error {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				return fn(i)
			})
		}
		return g.Wait()
	}
	if err := run(len(dirList), func(i int) error { return os.MkdirAll(dirList[i], 0o755) }); err != nil {
		p.fail(Local, "", fmt.Errorf("create snapshot directories: %w", err))
		return
	}
	err := run(len(ops), func(i int) error {
		if ops[i].target == "" {
			if _, err := os.Stat(ops[i].dst); err == nil {
				return nil
			}
			return atomicfile.Write(ops[i].dst, nil, 0o644)
		}
		_, err := writeLink(ops[i].dst, ops[i].target)
		return err
	})
	if err == nil {
		err = run(len(dirList), func(i int) error { return atomicfile.SyncDir(dirList[i]) })
	}
	if err != nil {
		p.fail(Local, "", err)
		return
	}
	if p.m.Revision != p.commit {
		ref := filepath.Join(p.repoDir, "refs", filepath.FromSlash(p.m.Revision))
		if err := writeSmall(ref, []byte(p.commit)); err != nil {
			p.fail(Local, "", err)
		}
	}
}
