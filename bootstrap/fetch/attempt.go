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

	"github.com/volboot/volboot/bootstrap/atomicfile"
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
// attempt if the part file is still the same inode (fh pins it, so its
// number cannot be reused) and holds exactly n bytes from url. Whoever
// drops a carry closes fh.
type hashCarry struct {
	url      string
	n, total int64
	h        hash.Hash
	fh       *os.File
}

func (c *hashCarry) drop() {
	if c != nil && c.fh != nil {
		c.fh.Close()
	}
}

// ErrReplaced is matched (errors.Is) by a failure caused by another writer
// of the same content-named download replacing its partial file: the
// caller may fetch again, and will usually find the other writer's verified
// file in place.
var ErrReplaced = errors.New("partial download replaced by another writer")

// replacedError: the part file path no longer names the file we wrote
// (another writer, whose volume lock failed, replaced it).
type replacedError struct{ path string }

func (e *replacedError) Error() string {
	return fmt.Sprintf("partial download %s was replaced by another writer; not using it", e.path)
}

func (e *replacedError) Is(target error) bool { return target == ErrReplaced }

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
//
// The attempt holds its own descriptor of the part file from start to
// commit and hands grab that very file (as /proc/self/fd/N), so the bytes
// grab writes, the bytes hashed and the inode renamed at the end are one
// file even if another writer replaces the path meanwhile.
func (f *Fetcher) attempt(ctx context.Context, it *Item, rawURL string, prog *itemProgress) error {
	part := it.partPath()
	metaPath := part + ".json"
	ru := redact.URL(rawURL)
	a := &attemptState{it: it, rawURL: rawURL, metaPath: metaPath, total: it.Size, prog: prog}
	carry := prog.carry
	prog.carry = nil

	fh, fi, err := openPart(part)
	if err != nil {
		carry.drop()
		return &localError{err}
	}
	keep := false // true once fh is handed to a carry or committed
	defer func() {
		if !keep && fh != nil {
			fh.Close()
		}
	}()
	var meta *partMeta
	if fi != nil {
		meta, _ = readMeta(metaPath)
	}
	if fi != nil && meta != nil && meta.URL == ru && meta.validator() != "" && meta.Size >= 0 &&
		(it.Size < 0 || meta.Size == it.Size) && fi.Size() > 0 && fi.Size() <= meta.Size {
		a.resume, a.prefix, a.validator, a.total = true, fi.Size(), meta.validator(), meta.Size
	} else if fi != nil {
		// Not resumable: start over in a new file.
		fh.Close()
		fh, fi = nil, nil
		if err := discardPart(part); err != nil {
			carry.drop()
			return &localError{err}
		}
	}
	if fi == nil {
		// openPart found no file and created none: create ours.
		fh, err = os.OpenFile(part, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			carry.drop()
			return &replacedError{part}
		}
		if err != nil {
			carry.drop()
			return &localError{fmt.Errorf("create partial download: %w", err)}
		}
	}
	if a.total < 0 && it.Digest.Kind == GitBlobSHA1 {
		carry.drop()
		return &localError{fmt.Errorf("git blob digest needs the size")}
	}
	a.hasher = it.Digest.newHasher(a.total)
	prog.set(0)
	if c := carry; a.resume && c != nil && c.url == ru && c.n == a.prefix && c.total == a.total && sameFile(c.fh, fi) {
		// The previous attempt in this process hashed exactly the bytes
		// this file holds: continue its hash instead of re-reading.
		a.hasher = c.h
	} else if a.resume {
		if err := hashPrefix(fh, a.prefix, a.hasher); err != nil {
			carry.drop()
			return err
		}
	}
	carry.drop()
	if a.resume {
		prog.set(a.prefix)
		f.log.Debug("resuming download", zap.String("item", it.Name), zap.String("url", ru), zap.Int64("offset", a.prefix), zap.Int64("size", a.total))
	}

	if !(a.resume && a.prefix == a.total) {
		if err := f.transfer(ctx, a, fh); err != nil {
			var re *restartError
			if errors.As(err, &re) {
				if derr := discardOurs(part, fh); derr != nil {
					return &localError{derr}
				}
			} else if a.hasher != nil && a.total >= 0 {
				prog.carry = &hashCarry{url: ru, n: a.prefix + a.streamed.Load(), total: a.total, h: a.hasher, fh: fh}
				keep = true
			}
			return err
		}
	}

	n := a.prefix + a.streamed.Load()
	if it.Size >= 0 && n != it.Size {
		discardOurs(part, fh)
		return &badResponseError{fmt.Sprintf("%s sent %d bytes, expected %d", ru, n, it.Size)}
	}
	if want := it.Digest.Hex; it.Digest.Kind != SizeOnly {
		got := sumHex(a.hasher)
		if got != want {
			if err := discardOurs(part, fh); err != nil {
				return &localError{err}
			}
			return &DigestError{URL: ru, Kind: it.Digest.Kind, Want: want, Got: got}
		}
	}
	keep = true
	if err := commitPart(fh, part, it.Dest, n); err != nil {
		var re *replacedError
		if errors.As(err, &re) {
			return err // another writer's file: leave it, retry later
		}
		return &localError{err}
	}
	os.Remove(metaPath)
	return nil
}

// openPart opens an existing part file for reading and writing; (nil, nil,
// nil) if there is none.
func openPart(part string) (*os.File, os.FileInfo, error) {
	fh, err := os.OpenFile(part, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open partial download: %w", err)
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, nil, fmt.Errorf("stat partial download: %w", err)
	}
	if !fi.Mode().IsRegular() {
		fh.Close()
		return nil, nil, fmt.Errorf("partial download %s is not a regular file", part)
	}
	return fh, fi, nil
}

func sameFile(fh *os.File, fi os.FileInfo) bool {
	if fh == nil || fi == nil {
		return false
	}
	cur, err := fh.Stat()
	return err == nil && os.SameFile(cur, fi)
}

// transfer runs grab for one attempt with a cancellable context watched for
// stalls.
func (f *Fetcher) transfer(ctx context.Context, a *attemptState, fh *os.File) error {
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
	wb := newWriteback(fh, f.opt.WritebackEvery)
	a.writeback = wb
	defer wb.Close()

	client := &grab.Client{
		HTTPClient: &httpDoer{f: f, a: a},
		UserAgent:  f.opt.UserAgent,
		BufferSize: bufSize,
	}
	// grab opens its file by name; this name is our descriptor's inode,
	// whatever happens to the part path meanwhile.
	req, err := grab.NewRequest(fmt.Sprintf("/proc/self/fd/%d", fh.Fd()), a.rawURL)
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
		return &localError{fmt.Errorf("write %s: %w", a.it.partPath(), fe.Err)}
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

// hashPrefix feeds the first n bytes of fh to h. A file that no longer
// has n bytes (another writer truncated it) is a retryable error.
func hashPrefix(fh *os.File, n int64, h hash.Hash) error {
	if h == nil {
		return nil
	}
	buf := make([]byte, 1<<20)
	got, err := io.CopyBuffer(h, io.NewSectionReader(fh, 0, n), buf)
	if err != nil {
		return &localError{fmt.Errorf("hash partial download %s: %w", fh.Name(), err)}
	}
	if got != n {
		return &replacedError{fh.Name()}
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

// discardOurs removes the part file and its record if the path still names
// our file; another writer's part is left alone.
func discardOurs(part string, fh *os.File) error {
	fi, err := os.Lstat(part)
	if err != nil || !sameFile(fh, fi) {
		return nil
	}
	return discardPart(part)
}

// commitPart fsyncs verified bytes (size of them) and gives them their
// final name, then closes fh. The caller fsyncs the directory before reporting success.
//
// The part path is shared with any other writer of the same item (one
// whose volume lock failed), so it may name someone else's inode by now.
// The rename must move the inode whose bytes we verified — the one fh
// holds open — and checking the path and then renaming it leaves a window
// (the fsync alone can take a second). So the part is first renamed to a
// name only this process uses, the inode behind that name is compared with
// fh, and only then renamed to dest. Another writer's file caught this way
// is removed (it will fail its own check and retry): correctness over
// throughput in a race that the volume lock normally prevents.
func commitPart(fh *os.File, part, dest string, size int64) error {
	defer fh.Close()
	// Our writes are appends of verified bytes; a file larger than what we
	// verified had someone else's appends interleaved.
	if fi, err := fh.Stat(); err != nil {
		return fmt.Errorf("stat %s: %w", part, err)
	} else if fi.Size() != size {
		discardOurs(part, fh)
		return &replacedError{part}
	}
	if err := fh.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", part, err)
	}
	claim := atomicfile.TempName(dest)
	if err := os.Rename(part, claim); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &replacedError{part}
		}
		return fmt.Errorf("rename %s to %s: %w", part, claim, err)
	}
	cfi, err := os.Lstat(claim)
	if err != nil {
		return fmt.Errorf("stat %s: %w", claim, err)
	}
	if !sameFile(fh, cfi) {
		os.Remove(claim)
		return &replacedError{part}
	}
	if err := os.Rename(claim, dest); err != nil {
		os.Remove(claim)
		return fmt.Errorf("rename %s to %s: %w", claim, dest, err)
	}
	return nil
}
