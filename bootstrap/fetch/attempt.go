package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/cavaliergopher/grab/v3"
	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/redact"
)

// partMeta is the resume record beside a part file. URL is redacted: the
// record lives on a shared volume and must hold no secret.
type partMeta struct {
	Schema       int    `json:"schema"`
	URL          string `json:"url"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
	Size         int64  `json:"size"`
}

// validator is what If-Range carries: a strong ETag, else Last-Modified
// (weak ETags are not allowed in If-Range).
func (m *partMeta) validator() string {
	if m.ETag != "" && !isWeak(m.ETag) {
		return m.ETag
	}
	return m.LastModified
}

func isWeak(etag string) bool { return len(etag) >= 2 && etag[:2] == "W/" }

func readMeta(path string) (*partMeta, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m partMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	if m.Schema != 1 {
		return nil, fmt.Errorf("%s: unknown schema %d", path, m.Schema)
	}
	return &m, nil
}

// DigestError is a completed download whose content does not match.
type DigestError struct {
	URL       string // redacted
	Kind      DigestKind
	Want, Got string
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("content from %s does not match: want %s %s, got %s", e.URL, e.Kind, e.Want, e.Got)
}

// StatusError is an HTTP error status.
type StatusError struct {
	Status     int
	URL        string        // redacted
	RetryAfter time.Duration // from Retry-After, 0 if absent
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("HTTP %d from %s", e.Status, e.URL)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (Retry-After %s)", e.RetryAfter)
	}
	return s
}

// Temporary reports whether the status is worth retrying (429 and 5xx).
func (e *StatusError) Temporary() bool { return e.Status == 429 || e.Status >= 500 }

// restartError asks for an immediate retry from zero: the server did not
// continue the representation we hold a prefix of.
type restartError struct{ reason string }

func (e *restartError) Error() string { return "cannot resume: " + e.reason }

// badResponseError is a response that contradicts what we know (size,
// status); retried with backoff like a network error.
type badResponseError struct{ msg string }

func (e *badResponseError) Error() string { return e.msg }

// localError is a failure on our side (disk, permissions): not retried.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

var errStalled = errors.New("no data received within the stall timeout")

// classify says whether err is retried, immediately (a restart) or after a
// delay (wait: the server's Retry-After, 0 for our backoff).
func classify(err error) (retry, immediate bool, wait time.Duration) {
	var se *StatusError
	var re *restartError
	var le *localError
	var pe *PolicyError
	var fe *fs.PathError
	switch {
	case errors.As(err, &re):
		return true, true, 0
	case errors.As(err, &se):
		return se.Temporary(), false, se.RetryAfter
	case errors.As(err, &le), errors.As(err, &pe), errors.As(err, &fe):
		return false, false, 0
	}
	return true, false, 0
}

// hashCarry is a hash state left by a failed attempt: valid for the next
// attempt if the part file still holds exactly n bytes from url.
type hashCarry struct {
	url      string
	n, total int64
	h        hash.Hash
}

// attemptState is shared between one attempt and its transport.
type attemptState struct {
	it        *Item
	rawURL    string
	metaPath  string
	resume    bool   // a part prefix exists and a validator is known
	prefix    int64  // bytes already in the part file
	validator string // for If-Range when resuming
	total     int64  // expected size, -1 unknown until a response says
	hasher    hash.Hash
	sink      hashSink // feeds hasher during a transfer
	writeback *writeback
	streamed  atomic.Int64 // body bytes read in this attempt
	lastRead  atomic.Int64 // unix nanos of the last progress
	prog      *itemProgress
}

// attempt makes one try at downloading it from rawURL into its part file and,
// if the bytes verify, renames the part to it.Dest.
func (f *Fetcher) attempt(ctx context.Context, it *Item, rawURL string, prog *itemProgress) error {
	part := it.partPath()
	metaPath := part + ".json"
	ru := redact.URL(rawURL)
	a := &attemptState{it: it, rawURL: rawURL, metaPath: metaPath, total: it.Size, prog: prog}

	meta, _ := readMeta(metaPath)
	fi, statErr := os.Stat(part)
	if statErr == nil && meta != nil && meta.URL == ru && meta.validator() != "" && meta.Size >= 0 &&
		(it.Size < 0 || meta.Size == it.Size) && fi.Size() > 0 && fi.Size() <= meta.Size {
		a.resume, a.prefix, a.validator, a.total = true, fi.Size(), meta.validator(), meta.Size
	} else if err := discardPart(part); err != nil {
		return &localError{err}
	}
	if a.total < 0 && it.Digest.Kind == GitBlobSHA1 {
		return &localError{fmt.Errorf("git blob digest needs the size")}
	}
	a.hasher = it.Digest.newHasher(a.total)
	prog.set(0)
	if c := prog.carry; a.resume && c != nil && c.url == ru && c.n == a.prefix && c.total == a.total {
		// The previous attempt in this process hashed exactly the bytes
		// the part file holds: continue its hash instead of re-reading.
		a.hasher = c.h
	} else if a.resume {
		if err := hashPrefix(part, a.prefix, a.hasher); err != nil {
			return &localError{err}
		}
	}
	prog.carry = nil
	if a.resume {
		prog.set(a.prefix)
		f.log.Debug("resuming download", zap.String("item", it.Name), zap.String("url", ru), zap.Int64("offset", a.prefix), zap.Int64("size", a.total))
	}

	if !(a.resume && a.prefix == a.total) {
		if err := f.transfer(ctx, a, part); err != nil {
			var re *restartError
			if errors.As(err, &re) {
				if derr := discardPart(part); derr != nil {
					return &localError{derr}
				}
			} else if a.hasher != nil && a.total >= 0 {
				prog.carry = &hashCarry{url: ru, n: a.prefix + a.streamed.Load(), total: a.total, h: a.hasher}
			}
			return err
		}
	}

	n := a.prefix + a.streamed.Load()
	if it.Size >= 0 && n != it.Size {
		discardPart(part)
		return &badResponseError{fmt.Sprintf("%s sent %d bytes, expected %d", ru, n, it.Size)}
	}
	if want := it.Digest.Hex; it.Digest.Kind != SizeOnly {
		got := sumHex(a.hasher)
		if got != want {
			if err := discardPart(part); err != nil {
				return &localError{err}
			}
			return &DigestError{URL: ru, Kind: it.Digest.Kind, Want: want, Got: got}
		}
	}
	if err := commitPart(part, it.Dest); err != nil {
		return &localError{err}
	}
	os.Remove(metaPath)
	return nil
}

// transfer runs grab for one attempt with a cancellable context watched for
// stalls.
func (f *Fetcher) transfer(ctx context.Context, a *attemptState, part string) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	a.lastRead.Store(f.opt.Now().UnixNano())
	watchDone := make(chan struct{})
	defer close(watchDone)
	go f.watchStall(a, cancel, watchDone)
	bufSize := f.opt.BufferSize
	if a.total >= 0 && a.total-a.prefix < int64(bufSize) {
		// Small files: a whole buffer each would only feed the GC.
		bufSize = int(max(a.total-a.prefix, 4<<10))
	}
	if a.hasher != nil && a.total-a.prefix < asyncHashMin && a.total >= 0 {
		// Too little to gain from overlapping: hash inline.
		a.sink = inlineHasher{a.hasher}
	} else if a.hasher != nil {
		sh := newStreamHasher(a.hasher, 4, f.opt.BufferSize, &f.slots)
		a.sink = sh
		// Runs before the deferred close(watchDone) and cancel: by then
		// grab has stopped reading, and the hash must be complete before
		// anyone reads it.
		defer func() { sh.Close(); a.sink = nil }()
	}
	wb := newWriteback(part, f.opt.WritebackEvery)
	a.writeback = wb
	defer wb.Close()

	client := &grab.Client{
		HTTPClient: &httpDoer{f: f, a: a},
		UserAgent:  f.opt.UserAgent,
		BufferSize: bufSize,
	}
	req, err := grab.NewRequest(part, a.rawURL)
	if err != nil {
		return &PolicyError{Msg: fmt.Sprintf("bad URL %s: %v", redact.URL(a.rawURL), err)}
	}
	if a.total > 0 {
		req.Size = a.total
	}
	req.NoCreateDirectories = true
	req.IgnoreRemoteTime = true
	req.BufferSize = bufSize
	req = req.WithContext(actx)
	resp := client.Do(req)
	err = resp.Err()
	if err == nil {
		return nil
	}
	if cause := context.Cause(actx); errors.Is(cause, errStalled) && ctx.Err() == nil {
		return fmt.Errorf("%s: %w", redact.URL(a.rawURL), errStalled)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		// url.Error prints the URL with its query (maybe a signed token):
		// keep only the cause and name the redacted URL ourselves.
		err = uerr.Err
	}
	var se *StatusError
	var re *restartError
	var pe *PolicyError
	var be *badResponseError
	if errors.As(err, &se) || errors.As(err, &re) || errors.As(err, &pe) || errors.As(err, &be) {
		return err
	}
	if errors.Is(err, grab.ErrBadLength) {
		return &badResponseError{fmt.Sprintf("%s: response length disagrees with the expected size %d", redact.URL(a.rawURL), a.total)}
	}
	var fe *fs.PathError
	if errors.As(err, &fe) {
		return &localError{fmt.Errorf("write %s: %w", part, err)}
	}
	return fmt.Errorf("%s: %w", redact.URL(a.rawURL), err)
}

// watchStall cancels the attempt when no body bytes arrive for
// StallTimeout. It exits when done closes.
func (f *Fetcher) watchStall(a *attemptState, cancel context.CancelCauseFunc, done <-chan struct{}) {
	tick := time.NewTicker(max(f.opt.StallTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			last := time.Unix(0, a.lastRead.Load())
			if f.opt.Now().Sub(last) > f.opt.StallTimeout {
				cancel(errStalled)
				return
			}
		}
	}
}

// hashPrefix feeds the first n bytes of path to h.
func hashPrefix(path string, n int64, h hash.Hash) error {
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open partial download: %w", err)
	}
	defer fh.Close()
	if h == nil {
		return nil
	}
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(h, io.LimitReader(fh, n), buf); err != nil {
		return fmt.Errorf("hash partial download %s: %w", path, err)
	}
	return nil
}

// discardPart removes a part file and its record.
func discardPart(part string) error {
	for _, p := range []string{part, part + ".json"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale partial download: %w", err)
		}
	}
	return nil
}

// commitPart fsyncs verified bytes and gives them their final name. The
// caller fsyncs the directory before reporting success.
func commitPart(part, dest string) error {
	fh, err := os.OpenFile(part, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open verified download: %w", err)
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return fmt.Errorf("fsync %s: %w", part, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("close %s: %w", part, err)
	}
	if err := os.Chmod(part, 0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", part, err)
	}
	if err := os.Rename(part, dest); err != nil {
		return fmt.Errorf("rename %s to %s: %w", part, dest, err)
	}
	// The directory is fsynced once per Fetch for all its renames (see
	// Fetcher.Fetch), not once per file.
	return nil
}
