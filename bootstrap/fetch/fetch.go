// Package fetch downloads files into a content-addressed cache: in
// parallel, resumable across processes and hosts, verified in the stream,
// polite to servers, and safe with credentials.
//
// A download of Item.Dest goes through Item.Part (default PartPath(Dest))
// and a small JSON record beside it (Part + ".json": URL, ETag,
// Last-Modified, size). Both survive a crash; the next Fetch of the same item
// — in this or another process, on this or another host — resumes with
// Range and If-Range. A ranged response is accepted only as a 206 whose
// Content-Range starts where the part file ends and whose total is the known
// size; anything else (a 200 because If-Range failed or the server ignores
// ranges, a wrong Content-Range) restarts the download from zero. Bytes are
// never appended to a part file unless the server has vouched, through
// If-Range, that they continue the same representation.
//
// The digest (sha256, git blob sha1, or size only) is computed as bytes
// arrive; when resuming, the existing prefix is hashed once first. The
// finished file is never re-read. Verified bytes are fsynced and renamed to
// Dest, then the directory is fsynced; bytes that fail verification never get
// a final name: the part is discarded and the download retried once from
// zero, after which the URL fails with both digests named.
//
// Transfers use github.com/cavaliergopher/grab/v3, whose HTTP client is
// wrapped (see transport.go) to add what grab lacks: If-Range, the 206 and
// Content-Range check, hashing in the stream, status classification,
// per-host credentials and the HTTPS policy. Grab writes through a
// descriptor the attempt owns (/proc/self/fd/N, so Linux with /proc), which
// ties the bytes written, the bytes hashed and the inode finally renamed to
// one file.
//
// Concurrency: a Fetcher is safe for concurrent use. Two Fetch calls or two
// processes downloading the same item at once (the volume lock normally
// prevents it) share one part path; each renames only the inode it wrote
// and verified, at the size it verified, so the race costs retries, never
// a wrong file under a final name.
//
// Files below Options.ResumeMinSize keep no resume record and restart from
// zero after a crash; every other download resumes.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/redact"
)

// Item is one file to download.
type Item struct {
	// Name labels the item in progress output and errors, e.g. "torch-2.8.0".
	Name string
	// URLs are tried in order: the primary, then mirrors.
	URLs []string
	// Size is the expected size in bytes, or -1 if unknown (then the
	// server's Content-Length is recorded and checked on resume).
	Size int64
	// Digest is the expected content digest.
	Digest Digest
	// Dest is the final path. Its directory must exist.
	Dest string
	// Part is the partial file's path; empty means PartPath(Dest).
	Part string
}

// PartPath is the default partial-file path for dest: dest with its
// extension replaced by ".part" (cache/wheels/<sha256>.whl ->
// cache/wheels/<sha256>.part; blobs/<etag> -> blobs/<etag>.part). Its
// resume record is PartPath(dest) + ".json".
func PartPath(dest string) string {
	base := filepath.Base(dest)
	if ext := filepath.Ext(base); ext != "" && ext != base {
		return strings.TrimSuffix(dest, ext) + ".part"
	}
	return dest + ".part"
}

func (it *Item) partPath() string {
	if it.Part != "" {
		return it.Part
	}
	return PartPath(it.Dest)
}

func (it *Item) validate() error {
	if len(it.URLs) == 0 {
		return errors.New("no URL")
	}
	if it.Dest == "" {
		return errors.New("no destination path")
	}
	if it.Size < -1 {
		return fmt.Errorf("size %d is negative", it.Size)
	}
	if err := it.Digest.validate(); err != nil {
		return err
	}
	if it.Size < 0 && it.Digest.Kind != SHA256 {
		return fmt.Errorf("%s verification needs the size", it.Digest.Kind)
	}
	if it.partPath() == it.Dest {
		return errors.New("part path equals the destination")
	}
	return nil
}

// Result reports one item's outcome.
type Result struct {
	Item Item
	// Cached is true when Dest already existed with the expected size and
	// nothing was downloaded.
	Cached bool
	// Err is nil on success. It names the URLs tried and why each failed.
	Err error
}

// Options configures a Fetcher. Zero values choose the documented defaults.
type Options struct {
	// Client supplies the base transport (Client.Transport; nil means a
	// clone of http.DefaultTransport). Its redirect policy and timeout are
	// not used: the Fetcher follows at most 10 redirects and detects stalls
	// itself.
	Client *http.Client
	// Logger receives retries, fallbacks and progress lines; nil: no logs.
	Logger *zap.Logger
	// Jobs is how many files download at once (default 4).
	Jobs int
	// PerHost caps concurrent transfers per host (default 4).
	PerHost int
	// Credentials chooses an Authorization header per host; nil: none.
	Credentials *Credentials
	// AllowHTTP lists host names that may be fetched over plain http.
	// Loopback hosts always may; everything else needs https.
	AllowHTTP []string
	// MaxAttempts is the number of attempts per URL for retryable failures
	// (default 5).
	MaxAttempts int
	// BackoffBase and BackoffMax shape the exponential backoff between
	// attempts (defaults 1s and 30s); each delay is jittered to 50-100%.
	BackoffBase, BackoffMax time.Duration
	// MaxRetryAfter caps how long a server's Retry-After is honoured
	// (default 5m).
	MaxRetryAfter time.Duration
	// StallTimeout fails an attempt that receives no bytes for this long
	// (default 60s); the attempt is retried and resumes.
	StallTimeout time.Duration
	// BufferSize is the copy buffer per transfer (default 256 KiB).
	BufferSize int
	// Sleep waits between attempts; tests inject a fast one. It must return
	// ctx.Err() when ctx ends first.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock for Retry-After dates, rates and ETAs.
	Now func() time.Time
	// Progress configures progress reporting.
	Progress ProgressOptions
	// UserAgent defaults to "volboot".
	UserAgent string
	// ResumeMinSize is the size from which a download keeps a resume
	// record (default 8 MiB; negative: always). Smaller files restart
	// from zero after a crash, which costs less than the record's fsyncs.
	ResumeMinSize int64
	// WritebackEvery starts the kernel's writeback of a part file every
	// this many bytes (default 32 MiB; negative disables), so that the
	// fsync before the rename has little left to do.
	WritebackEvery int64
}

// Fetcher downloads Items. Create it with New; it is safe for concurrent
// use (see the package comment for the one rule about shared items).
type Fetcher struct {
	opt     Options
	log     *zap.Logger
	base    http.RoundTripper
	allow   map[string]bool
	hostsMu sync.Mutex
	hosts   map[string]*semaphore.Weighted
	randMu  sync.Mutex
	rand    *rand.Rand
	slots   sync.Pool // *[]byte of BufferSize, for streamHasher
}

// New returns a Fetcher with opt's defaults filled in.
func New(opt Options) *Fetcher {
	if opt.Jobs <= 0 {
		opt.Jobs = 4
	}
	if opt.PerHost <= 0 {
		opt.PerHost = 4
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = 5
	}
	if opt.BackoffBase <= 0 {
		opt.BackoffBase = time.Second
	}
	if opt.BackoffMax <= 0 {
		opt.BackoffMax = 30 * time.Second
	}
	if opt.MaxRetryAfter <= 0 {
		opt.MaxRetryAfter = 5 * time.Minute
	}
	if opt.StallTimeout <= 0 {
		opt.StallTimeout = 60 * time.Second
	}
	if opt.BufferSize <= 0 {
		opt.BufferSize = 256 << 10
	}
	if opt.Sleep == nil {
		opt.Sleep = sleepCtx
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.ResumeMinSize == 0 {
		opt.ResumeMinSize = 8 << 20
	} else if opt.ResumeMinSize < 0 {
		opt.ResumeMinSize = 0
	}
	if opt.WritebackEvery == 0 {
		opt.WritebackEvery = 32 << 20
	}
	if opt.UserAgent == "" {
		opt.UserAgent = "volboot"
	}
	log := opt.Logger
	if log == nil {
		log = zap.NewNop()
	}
	var base http.RoundTripper
	if opt.Client != nil && opt.Client.Transport != nil {
		base = opt.Client.Transport
	} else {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	allow := map[string]bool{}
	for _, h := range opt.AllowHTTP {
		allow[strings.ToLower(h)] = true
	}
	return &Fetcher{
		opt:   opt,
		log:   log,
		base:  base,
		allow: allow,
		hosts: map[string]*semaphore.Weighted{},
		rand:  rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid()))),
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Fetch downloads every item not already at its destination, Jobs at a
// time, and returns one Result per item in order. The error is nil when
// every item succeeded, else the items' errors joined. One item's failure
// does not stop the others; cancelling ctx stops all (part files stay for
// the next run).
func (f *Fetcher) Fetch(ctx context.Context, items []Item) ([]Result, error) {
	return f.FetchEach(ctx, items, nil)
}

// FetchEach is Fetch that also calls done(i) as soon as items[i] is at its
// destination, verified (or was there already), so a caller can start
// using one file while others still download. done runs on the item's
// goroutine, at most once per item and never for a failed one; it must
// not block for long (it holds a download slot). The item's rename is not
// yet durable then: Fetch makes it so before it returns, and an item
// whose directory cannot be synced is still reported failed in the
// results.
func (f *Fetcher) FetchEach(ctx context.Context, items []Item, done func(i int)) ([]Result, error) {
	results := make([]Result, len(items))
	seen := map[string]int{}
	for i, it := range items {
		results[i].Item = it
		if err := it.validate(); err != nil {
			results[i].Err = fmt.Errorf("download %s: %w", it.Name, err)
			continue
		}
		if j, dup := seen[it.Dest]; dup {
			results[i].Err = fmt.Errorf("download %s: destination %s is also the destination of %s", it.Name, it.Dest, items[j].Name)
			continue
		}
		seen[it.Dest] = i
	}
	tr := newTracker(f, items)
	stop := tr.start(ctx)
	defer stop()

	sem := semaphore.NewWeighted(int64(f.opt.Jobs))
	var wg sync.WaitGroup
	for i := range items {
		if results[i].Err != nil {
			tr.finish(i, false)
			continue
		}
		if err := sem.Acquire(ctx, 1); err != nil {
			results[i].Err = fmt.Errorf("download %s: %w", items[i].Name, err)
			tr.finish(i, false)
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer sem.Release(1)
			cached, err := f.fetchItem(ctx, &items[i], tr.item(i))
			results[i].Cached = cached
			results[i].Err = err
			tr.finish(i, err == nil)
			if err == nil && done != nil {
				done(i)
			}
		}(i)
	}
	wg.Wait()
	// One directory fsync per destination directory makes this call's
	// renames durable; only then is an item reported as fetched.
	dirs := map[string][]int{}
	for i, r := range results {
		if r.Err == nil && !r.Cached {
			d := filepath.Dir(items[i].Dest)
			dirs[d] = append(dirs[d], i)
		}
	}
	for d, idx := range dirs {
		if err := atomicfile.SyncDir(d); err != nil {
			for _, i := range idx {
				results[i].Err = fmt.Errorf("download %s: %w", items[i].Name, err)
			}
		}
	}
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return results, errors.Join(errs...)
}

// fetchItem makes it.Dest exist with verified content, trying each URL.
func (f *Fetcher) fetchItem(ctx context.Context, it *Item, prog *itemProgress) (cached bool, err error) {
	if fi, err := os.Stat(it.Dest); err == nil && fi.Mode().IsRegular() {
		if it.Size < 0 || fi.Size() == it.Size {
			prog.set(fi.Size())
			return true, nil
		}
		// A final name only ever gets verified bytes, so this file was
		// changed behind our back; replace it (the rename overwrites).
		f.log.Warn("cached file has the wrong size; downloading it again",
			zap.String("file", it.Dest), zap.Int64("size", fi.Size()), zap.Int64("want", it.Size))
	}
	var errs []error
	for i, u := range it.URLs {
		if i > 0 {
			// fetchURL logged why the previous URL failed.
			f.log.Info("trying the next mirror", zap.String("item", it.Name), zap.String("url", redact.URL(u)))
		}
		err := f.fetchURL(ctx, it, u, prog)
		if err == nil {
			return false, nil
		}
		if ctx.Err() != nil {
			return false, fmt.Errorf("download %s: %w", it.Name, ctx.Err())
		}
		errs = append(errs, err)
	}
	return false, fmt.Errorf("download %s: %w", it.Name, errors.Join(errs...))
}

// fetchURL downloads from one URL with retries. The URL's outcome is one
// line, when an attempt failed: an unreachable index must cost a line per
// URL, not one per attempt (each attempt is a debug line). A cancelled
// download is not a failure worth a line.
func (f *Fetcher) fetchURL(ctx context.Context, it *Item, rawURL string, prog *itemProgress) error {
	attempts, last, err := f.retryURL(ctx, it, rawURL, prog)
	ru := redact.URL(rawURL)
	switch {
	case err != nil && ctx.Err() == nil:
		f.log.Warn("download failed", zap.String("item", it.Name), zap.String("url", ru), zap.Int("attempts", attempts), zap.Error(err))
	case err == nil && attempts > 1:
		failed := fmt.Sprintf("%d failed attempts", attempts-1)
		if attempts == 2 {
			failed = "a failed attempt"
		}
		f.log.Info("downloaded after "+failed, zap.String("item", it.Name), zap.String("url", ru),
			zap.NamedError("last_error", last))
	}
	return err
}

// retryURL makes the attempts of fetchURL. It returns how many it made,
// the last failed one's error, and the outcome.
func (f *Fetcher) retryURL(ctx context.Context, it *Item, rawURL string, prog *itemProgress) (attempts int, last, err error) {
	ru := redact.URL(rawURL)
	if err := f.checkURLString(rawURL); err != nil {
		return 0, err, err
	}
	mismatches := 0
	for attempt := 1; ; attempt++ {
		err := f.hostSlot(ctx, rawURL, func() error { return f.attempt(ctx, it, rawURL, prog) })
		if err == nil {
			return attempt, last, nil
		}
		if ctx.Err() != nil {
			return attempt, last, ctx.Err()
		}
		last = err
		var de *DigestError
		if errors.As(err, &de) {
			mismatches++
			if mismatches >= 2 {
				return attempt, last, err
			}
			f.log.Warn("digest mismatch; retrying once from zero", zap.String("item", it.Name), zap.String("url", ru), zap.Error(err))
			continue
		}
		retry, immediate, wait := classify(err)
		if !retry {
			return attempt, last, err
		}
		if attempt >= f.opt.MaxAttempts {
			return attempt, last, fmt.Errorf("%d attempts failed: %w", attempt, err)
		}
		if immediate {
			f.log.Debug("restarting download from zero", zap.String("item", it.Name), zap.String("url", ru), zap.Int("attempt", attempt), zap.Error(err))
			continue
		}
		delay := f.backoff(attempt)
		if wait > 0 {
			delay = min(wait, f.opt.MaxRetryAfter)
		}
		f.log.Debug("download attempt failed; retrying", zap.String("item", it.Name), zap.String("url", ru),
			zap.Int("attempt", attempt), zap.Int("max_attempts", f.opt.MaxAttempts), zap.Duration("delay", delay), zap.Error(err))
		if err := f.opt.Sleep(ctx, delay); err != nil {
			return attempt, last, err
		}
	}
}

// backoff is BackoffBase*2^(attempt-1), capped at BackoffMax, jittered to
// 50-100% so that workers that failed together do not retry together.
func (f *Fetcher) backoff(attempt int) time.Duration {
	d := f.opt.BackoffBase
	for i := 1; i < attempt && d < f.opt.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, f.opt.BackoffMax)
	f.randMu.Lock()
	j := f.rand.Float64()
	f.randMu.Unlock()
	return time.Duration(float64(d) * (0.5 + 0.5*j))
}

// hostSlot runs fn holding one of the PerHost slots of rawURL's host.
func (f *Fetcher) hostSlot(ctx context.Context, rawURL string, fn func() error) error {
	host := strings.ToLower(hostOf(rawURL))
	f.hostsMu.Lock()
	s, ok := f.hosts[host]
	if !ok {
		s = semaphore.NewWeighted(int64(f.opt.PerHost))
		f.hosts[host] = s
	}
	f.hostsMu.Unlock()
	if err := s.Acquire(ctx, 1); err != nil {
		return err
	}
	defer s.Release(1)
	return fn()
}

// PolicyError is a refusal by the fetcher's security policy.
type PolicyError struct{ Msg string }

func (e *PolicyError) Error() string { return e.Msg }

// checkScheme enforces HTTPS except for loopback and AllowHTTP hosts.
func (f *Fetcher) checkScheme(scheme, host, shown string) error {
	switch strings.ToLower(scheme) {
	case "https":
		return nil
	case "http":
		h := strings.ToLower(host)
		if f.allow[h] || isLoopback(h) {
			return nil
		}
		return &PolicyError{Msg: fmt.Sprintf("refusing plain http to %s (%s): HTTPS is required; list the host under allow-http in the manifest to permit it", host, shown)}
	}
	return &PolicyError{Msg: fmt.Sprintf("unsupported URL scheme %q in %s: use https", scheme, shown)}
}

func isLoopback(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
