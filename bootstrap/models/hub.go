package models

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/redact"
)

// ErrorKind classifies why a model could not be fetched.
type ErrorKind int

const (
	// Unauthorized: the hub answered 401 or 403.
	Unauthorized ErrorKind = iota + 1
	// RepoNotFound: the repository does not exist (or is hidden from us).
	RepoNotFound
	// RevisionNotFound: the branch, tag or commit does not exist.
	RevisionNotFound
	// EntryNotFound: a file or pattern names nothing at the commit.
	EntryNotFound
	// Invalid: the model entry or the hub's answer is unusable.
	Invalid
	// Network: the hub could not be reached or kept failing.
	Network
	// Download: a blob could not be downloaded or failed verification.
	Download
	// Local: the cache directory could not be written.
	Local
)

// Error is why one model failed. Its message names the repository, the
// revision and the file where they matter, never a credential; it is meant
// as the reason of a degraded group.
type Error struct {
	Kind     ErrorKind
	Repo     string
	RepoType string
	Revision string
	Path     string // file or pattern, when one is at fault
	Status   int    // HTTP status, when one is at fault
	// NoToken is set for Unauthorized when no credential was sent.
	NoToken bool
	// Hidden is set for Unauthorized when the hub said the repository was
	// not found (the hub hides private repositories that way).
	Hidden bool
	// Gated is set for Unauthorized when the repository is gated and the
	// token's account has not been granted access.
	Gated bool
	Err   error
}

func (e *Error) Error() string {
	repo := e.Repo
	if e.RepoType != "" && e.RepoType != "model" {
		repo = e.RepoType + " " + repo
	}
	var msg string
	switch e.Kind {
	case Unauthorized:
		msg = fmt.Sprintf("HF_TOKEN missing or lacks access to %s (HTTP %d", repo, e.Status)
		if e.NoToken {
			msg += "; HF_TOKEN is not set"
		}
		if e.Gated {
			msg += "; the repository is gated: accept its conditions on the hub with the account HF_TOKEN belongs to"
		}
		if e.Hidden {
			msg += "; the hub also answers this way for a repository that does not exist"
		}
		msg += ")"
	case RepoNotFound:
		msg = fmt.Sprintf("repository %s not found (revision %s)", repo, e.Revision)
	case RevisionNotFound:
		msg = fmt.Sprintf("revision %s not found in %s", e.Revision, repo)
	case EntryNotFound:
		msg = fmt.Sprintf("%s not found in %s at revision %s", e.Path, repo, e.Revision)
	default:
		msg = repo + "@" + e.Revision
		if e.Path != "" {
			msg += " " + e.Path
		}
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// meta is what a resolve HEAD says about one file.
type meta struct {
	commit string
	etag   string // normalized
	size   int64  // -1 unknown
}

// httpError is a non-success answer of the hub, before it is turned into
// an *Error with the model's names.
type httpError struct {
	status int
	code   string // X-Error-Code
	commit string // X-Repo-Commit, when the hub sent one
	url    string // redacted
	msg    string // X-Error-Message
	// retryAfter is the server's Retry-After for 429/503, 0 if none.
	retryAfter time.Duration
}

func (e *httpError) Error() string {
	s := fmt.Sprintf("HTTP %d from %s", e.status, e.url)
	if e.code != "" {
		s += " (" + e.code + ")"
	}
	if e.msg != "" {
		s += ": " + truncate(e.msg, 200)
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func (e *httpError) temporary() bool {
	return e.status == http.StatusTooManyRequests || e.status >= 500
}

// hubClient makes the metadata requests: HEADs of resolve URLs and GETs of
// the revision API, following only relative redirects (renamed
// repositories) and retrying 429, 5xx and network errors.
type hubClient struct {
	rt          http.RoundTripper
	authHeader  func(host string) (string, bool)
	log         *zap.Logger
	maxAttempts int
	backoff     time.Duration
	sleep       func(ctx context.Context, d time.Duration) error
	userAgent   string
}

// do sends one request, following relative redirects with the same method
// and credentials, and returns the first response that is not one. The
// caller closes the body. A cross-host redirect is returned as it is: its
// headers are the metadata (huggingface_hub's get_hf_file_metadata does
// the same).
func (c *hubClient) do(ctx context.Context, method, rawURL string) (*http.Response, error) {
	cur := rawURL
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(ctx, method, cur, nil)
		if err != nil {
			return nil, fmt.Errorf("bad URL %s: %w", redact.URL(cur), err)
		}
		req.Header.Set("User-Agent", c.userAgent)
		// Content-Length must be the file's size, not a compressed one.
		req.Header.Set("Accept-Encoding", "identity")
		if h, ok := c.authHeader(req.URL.Hostname()); ok {
			req.Header.Set("Authorization", h)
		}
		resp, err := c.rt.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode < 300 || resp.StatusCode > 399 {
			return resp, nil
		}
		loc := resp.Header.Get("Location")
		u, perr := url.Parse(loc)
		if loc == "" || perr != nil || u.Host != "" || u.Scheme != "" {
			return resp, nil
		}
		resp.Body.Close()
		if hop >= 10 {
			return nil, fmt.Errorf("more than 10 redirects from %s", redact.URL(rawURL))
		}
		base, _ := url.Parse(cur)
		cur = base.ResolveReference(u).String()
		c.log.Debug("following relative redirect", zap.String("from", redact.URL(req.URL.String())), zap.String("to", redact.URL(cur)))
	}
}

// request runs do with retries and turns error statuses into *httpError.
// On success the caller closes the body. A request that needed retries is
// one line (each attempt a debug line), so an unreachable hub costs a line
// per URL; failures without retries (not found, gated) are the caller's to
// report, some being expected.
func (c *hubClient) request(ctx context.Context, method, rawURL string) (*http.Response, error) {
	resp, attempts, last, err := c.retry(ctx, method, rawURL)
	switch {
	case err != nil && attempts > 1 && ctx.Err() == nil:
		c.log.Warn("hub request failed", zap.String("url", redact.URL(rawURL)), zap.Int("attempts", attempts), zap.Error(err))
	case err == nil && attempts > 1:
		c.log.Info(fmt.Sprintf("hub request succeeded after %d failed attempts", attempts-1), zap.String("url", redact.URL(rawURL)),
			zap.NamedError("last_error", last))
	}
	return resp, err
}

// retry makes request's attempts. It returns how many it made, the last
// failed one's error, and the outcome.
func (c *hubClient) retry(ctx context.Context, method, rawURL string) (_ *http.Response, attempts int, last, _ error) {
	for attempt := 1; ; attempt++ {
		resp, err := c.do(ctx, method, rawURL)
		if err == nil && resp.StatusCode < 400 {
			return resp, attempt, last, nil
		}
		retry := true
		if err == nil {
			he := &httpError{status: resp.StatusCode, code: resp.Header.Get("X-Error-Code"), commit: resp.Header.Get("X-Repo-Commit"),
				url: redact.URL(rawURL), msg: resp.Header.Get("X-Error-Message")}
			he.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
			io.CopyN(io.Discard, resp.Body, 64<<10)
			resp.Body.Close()
			err, retry = he, he.temporary()
		} else if ctx.Err() != nil {
			return nil, attempt, last, ctx.Err()
		} else if !isNetError(err) {
			retry = false
		}
		last = err
		if !retry || attempt >= c.maxAttempts {
			if retry {
				return nil, attempt, last, fmt.Errorf("%d attempts failed: %w", attempt, last)
			}
			return nil, attempt, last, last
		}
		d := c.backoff << (attempt - 1)
		d = time.Duration(float64(d) * (0.5 + 0.5*rand.Float64()))
		var he *httpError
		if errors.As(last, &he) && he.retryAfter > 0 {
			d = min(he.retryAfter, maxRetryAfter)
		}
		c.log.Debug("hub request attempt failed; retrying", zap.String("url", redact.URL(rawURL)), zap.Int("attempt", attempt),
			zap.Int("max_attempts", c.maxAttempts), zap.Duration("delay", d), zap.Error(last))
		if err := c.sleep(ctx, d); err != nil {
			return nil, attempt, last, err
		}
	}
}

// maxRetryAfter caps how long a server's Retry-After is honoured.
const maxRetryAfter = 5 * time.Minute

// parseRetryAfter reads delay-seconds or an HTTP date; 0 if absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// head fetches one file's metadata.
func (c *hubClient) head(ctx context.Context, rawURL string) (meta, error) {
	resp, err := c.request(ctx, http.MethodHead, rawURL)
	if err != nil {
		return meta{}, err
	}
	resp.Body.Close()
	m := meta{commit: resp.Header.Get("X-Repo-Commit"), size: -1}
	m.etag = NormalizeETag(resp.Header.Get("X-Linked-Etag"))
	if m.etag == "" {
		m.etag = NormalizeETag(resp.Header.Get("ETag"))
	}
	sz := resp.Header.Get("X-Linked-Size")
	if sz == "" && resp.StatusCode < 300 {
		// A redirect's Content-Length is its own body's, not the file's.
		sz = resp.Header.Get("Content-Length")
	}
	if sz != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(sz), 10, 64)
		if err != nil || n < 0 {
			return meta{}, fmt.Errorf("%s: bad size header %q", redact.URL(rawURL), sz)
		}
		m.size = n
	}
	if !IsCommit(m.commit) {
		return meta{}, fmt.Errorf("%s: X-Repo-Commit %q is not a 40-hex commit id", redact.URL(rawURL), m.commit)
	}
	if err := checkETag(m.etag); err != nil {
		return meta{}, fmt.Errorf("%s: %w", redact.URL(rawURL), err)
	}
	return m, nil
}

// RevisionInfo is the part of the hub's revision API answer volboot uses.
type RevisionInfo struct {
	SHA      string `json:"sha"`
	Siblings []struct {
		RFilename string `json:"rfilename"`
	} `json:"siblings"`
}

// ParseRevisionInfo decodes and checks a revision API answer: sha must be
// a commit id and every sibling a safe repository path.
func ParseRevisionInfo(b []byte) (*RevisionInfo, error) {
	var ri RevisionInfo
	if err := json.Unmarshal(b, &ri); err != nil {
		return nil, fmt.Errorf("decode revision info: %w", err)
	}
	if !IsCommit(ri.SHA) {
		return nil, fmt.Errorf("revision info: sha %q is not a 40-hex commit id", truncate(ri.SHA, 60))
	}
	for _, s := range ri.Siblings {
		if err := checkRepoPath(s.RFilename); err != nil {
			return nil, fmt.Errorf("revision info: sibling: %w", err)
		}
	}
	return &ri, nil
}

// revisionInfo GETs the revision API.
func (c *hubClient) revisionInfo(ctx context.Context, rawURL string) (*RevisionInfo, error) {
	resp, err := c.request(ctx, http.MethodGet, rawURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &httpError{status: resp.StatusCode, url: redact.URL(rawURL), msg: "expected 200 with revision info"}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", redact.URL(rawURL), err)
	}
	ri, err := ParseRevisionInfo(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redact.URL(rawURL), err)
	}
	return ri, nil
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}
