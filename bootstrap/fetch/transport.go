package fetch

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/redact"
)

// httpDoer is the HTTP client grab uses for one attempt: a redirect-limited
// http.Client over attemptTransport.
type httpDoer struct {
	f *Fetcher
	a *attemptState
}

func (d *httpDoer) Do(req *http.Request) (*http.Response, error) {
	c := &http.Client{
		Transport: &attemptTransport{f: d.f, a: d.a},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return fmt.Errorf("stopped after 10 redirects at %s", redact.URL(req.URL.String()))
			}
			return nil
		},
	}
	return c.Do(req)
}

// attemptTransport is where grab's gaps are closed. For every request, on
// every redirect hop, it:
//   - enforces the HTTPS policy (so a redirect cannot downgrade);
//   - drops any Authorization it did not put there for this very host and
//     adds the host's own credential (so none crosses to another host,
//     whatever net/http's same-domain rule would forward);
//   - answers grab's HEAD itself (grab probes before every transfer into
//     an existing file, and ours always exists; the GET that follows is
//     checked anyway, some signed URLs refuse HEAD, and a server's HEAD
//     claiming length 0 would make grab skip the GET);
//   - sends If-Range with every Range, and accepts a ranged answer only as a
//     206 whose Content-Range continues our prefix with our total;
//   - turns 429/5xx and other error statuses into StatusError, and checks
//     a full answer's Content-Length against the expected size;
//   - records the resume record before any body byte reaches the part file;
//   - wraps the body so bytes are hashed and counted as they arrive.
type attemptTransport struct {
	f *Fetcher
	a *attemptState
}

func (t *attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	a := t.a
	shown := redact.URL(req.URL.String())
	if err := t.f.checkScheme(req.URL.Scheme, req.URL.Hostname(), shown); err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	if r.URL.User == nil {
		r.Header.Del("Authorization")
	}
	if c, ok := t.f.opt.Credentials.For(r.URL.Hostname()); ok && r.URL.User == nil {
		r.Header.Set("Authorization", c.header())
	}
	if r.Method == http.MethodHead {
		return t.syntheticHead(r), nil
	}
	if a.resume {
		want := "bytes=" + strconv.FormatInt(a.prefix, 10) + "-"
		if got := r.Header.Get("Range"); got != want {
			return nil, &restartError{fmt.Sprintf("transfer asked for range %q, expected %q", got, want)}
		}
		r.Header.Set("If-Range", a.validator)
	} else {
		// Grab asks for "bytes=0-" on our fresh, empty file; anything else
		// means the file grew under us (another writer).
		if got := r.Header.Get("Range"); got != "" && got != "bytes=0-" {
			return nil, &replacedError{a.it.partPath()}
		}
		r.Header.Del("Range")
		r.Header.Del("If-Range")
	}
	a.lastRead.Store(t.f.opt.Now().UnixNano())
	resp, err := t.f.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return resp, nil
	}
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && a.resume {
		// Our prefix does not fit the resource (servers that check Range
		// before If-Range answer a changed file this way): start over.
		discardBody(resp)
		return nil, &restartError{fmt.Sprintf("%s answered 416 to a range from byte %d", shown, a.prefix)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		se := &StatusError{Status: resp.StatusCode, URL: shown}
		if se.Temporary() {
			se.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), t.f.opt.Now())
		}
		discardBody(resp)
		return nil, se
	}
	if r.Method != http.MethodGet {
		return resp, nil
	}
	if a.resume {
		if err := checkPartial(resp, a.prefix, a.total); err != nil {
			discardBody(resp)
			return nil, err
		}
	} else {
		if resp.StatusCode != http.StatusOK {
			discardBody(resp)
			return nil, &badResponseError{fmt.Sprintf("%s answered %d to a request without Range", shown, resp.StatusCode)}
		}
		if cl := resp.ContentLength; cl >= 0 && a.total >= 0 && cl != a.total {
			discardBody(resp)
			return nil, &badResponseError{fmt.Sprintf("%s: Content-Length %d, expected size %d", shown, cl, a.total)}
		}
		if a.total < 0 {
			a.total = resp.ContentLength
		}
		// Files below ResumeMinSize get no resume record (it costs two
		// fsyncs): a leftover part without one is discarded and refetched.
		if a.total < 0 || a.total >= t.f.opt.ResumeMinSize {
			m := partMeta{Schema: 1, URL: redact.URL(a.rawURL), ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Size: a.total}
			b, _ := jsonMarshal(m)
			if err := atomicfile.Write(a.metaPath, b, 0o644); err != nil {
				discardBody(resp)
				return nil, &localError{fmt.Errorf("record resume data: %w", err)}
			}
		}
	}
	limit := int64(-1)
	if a.total >= 0 {
		limit = a.total - a.prefix
	}
	resp.Body = &hashingBody{rc: resp.Body, a: a, limit: limit, now: t.f.opt.Now, url: shown}
	return resp, nil
}

// syntheticHead answers grab's HEAD (sent whenever its file exists, and
// ours always does) with the size we expect, if known, and range support. Grab needs
// this to resume; the ranged GET's 206 check is what actually validates,
// and a fresh download's "Range: bytes=0-" is dropped above. Some signed
// URLs refuse HEAD, and the round trip would be wasted anyway.
func (t *attemptTransport) syntheticHead(r *http.Request) *http.Response {
	h := http.Header{}
	h.Set("Accept-Ranges", "bytes")
	if t.a.total >= 0 {
		h.Set("Content-Length", strconv.FormatInt(t.a.total, 10))
	}
	return &http.Response{
		Status: "200 OK", StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: http.NoBody, ContentLength: t.a.total, Request: r,
	}
}

var contentRange = regexp.MustCompile(`^bytes (\d+)-(\d+)/(\d+|\*)$`)

// checkPartial accepts a response to "Range: bytes=start-" only if it is a
// 206 covering exactly start..total-1 of a representation of size total.
func checkPartial(resp *http.Response, start, total int64) error {
	if resp.StatusCode != http.StatusPartialContent {
		return &restartError{fmt.Sprintf("server answered %d to a ranged request (representation changed or ranges unsupported)", resp.StatusCode)}
	}
	cr := resp.Header.Get("Content-Range")
	m := contentRange.FindStringSubmatch(strings.TrimSpace(cr))
	if m == nil {
		return &restartError{fmt.Sprintf("206 with unusable Content-Range %q", cr)}
	}
	s, _ := strconv.ParseInt(m[1], 10, 64)
	e, _ := strconv.ParseInt(m[2], 10, 64)
	if m[3] == "*" {
		return &restartError{fmt.Sprintf("206 with unknown total in Content-Range %q", cr)}
	}
	tot, _ := strconv.ParseInt(m[3], 10, 64)
	if s != start || tot != total || e != total-1 || s > e {
		return &restartError{fmt.Sprintf("206 with Content-Range %q, expected bytes %d-%d/%d", cr, start, total-1, total)}
	}
	if resp.ContentLength >= 0 && resp.ContentLength != total-start {
		return &restartError{fmt.Sprintf("206 with Content-Length %d for range %d-%d", resp.ContentLength, start, total-1)}
	}
	return nil
}

// hashingBody hashes and counts body bytes as grab reads them. Grab writes
// every byte it reads before reading more, so when the transfer ends
// without error the hash covers exactly what the part file received.
type hashingBody struct {
	rc    io.ReadCloser
	a     *attemptState
	limit int64 // bytes this response may carry, -1 unknown
	n     int64
	now   func() time.Time
	url   string
}

func (b *hashingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		if b.limit >= 0 && b.n+int64(n) > b.limit {
			return 0, &badResponseError{fmt.Sprintf("%s sent more than the expected %d bytes", b.url, b.limit)}
		}
		if b.a.sink != nil {
			b.a.sink.Write(p[:n])
		}
		b.n += int64(n)
		b.a.writeback.progress(b.n)
		b.a.streamed.Add(int64(n))
		b.a.prog.add(int64(n))
		b.a.lastRead.Store(b.now().UnixNano())
	}
	if err == io.EOF && b.limit >= 0 && b.n < b.limit {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *hashingBody) Close() error { return b.rc.Close() }

// discardBody closes a response we will not use, reading a little first so
// the connection can be reused.
func discardBody(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 if absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(min(n, 1<<31)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// hostOf returns the host name of a URL string, or "" if it does not parse.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// checkURLString applies the scheme policy to a URL before any attempt.
func (f *Fetcher) checkURLString(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return &PolicyError{Msg: fmt.Sprintf("bad URL %s: %v", redact.URL(raw), errors.Unwrap(err))}
	}
	if u.Host == "" {
		return &PolicyError{Msg: fmt.Sprintf("URL %s has no host", redact.URL(raw))}
	}
	return f.checkScheme(u.Scheme, u.Hostname(), redact.URL(raw))
}
