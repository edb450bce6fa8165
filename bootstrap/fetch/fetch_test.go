package fetch

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/volboot/volboot/integration/testindex"
)

// env is one test's index server and cache directory.
type env struct {
	t      *testing.T
	idx    *testindex.Server
	srv    *httptest.Server
	dir    string
	sleeps *sleepLog
	logs   *observer.ObservedLogs
}

type sleepLog struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleepLog) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleepLog) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	idx := testindex.New()
	srv := httptest.NewServer(idx)
	t.Cleanup(func() { srv.Close(); idx.Close() })
	return &env{t: t, idx: idx, srv: srv, dir: t.TempDir(), sleeps: &sleepLog{}}
}

func (e *env) logger() *zap.Logger {
	core, logs := observer.New(zap.DebugLevel)
	e.logs = logs
	return zap.New(core)
}

func (e *env) fetcher(mod func(*Options)) *Fetcher {
	o := Options{
		Logger:        e.logger(),
		Sleep:         e.sleeps.sleep,
		StallTimeout:  2 * time.Second,
		BufferSize:    32 << 10,
		ResumeMinSize: -1, // the test files are small; exercise resume
	}
	if mod != nil {
		mod(&o)
	}
	return New(o)
}

// addFile serves random content at /files/<name> and returns it with an
// Item that downloads it into the cache directory.
func (e *env) addFile(name string, size int) ([]byte, Item) {
	e.t.Helper()
	r := rand.New(rand.NewPCG(uint64(size), uint64(len(name))))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if err := e.idx.AddWheel(name, testindex.Bytes(data)); err != nil {
		e.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	return data, Item{
		Name:   name,
		URLs:   []string{e.srv.URL + testindex.FileURLPath(name)},
		Size:   int64(size),
		Digest: Digest{Kind: SHA256, Hex: h},
		Dest:   filepath.Join(e.dir, h+".whl"),
	}
}

func (e *env) fault(name string, f testindex.Fault) {
	e.t.Helper()
	if err := e.idx.SetFault(testindex.FileURLPath(name), f); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) stats(name string) testindex.Stats { return e.idx.Stats(testindex.FileURLPath(name)) }

// assertFinal checks the destination holds exactly data and no partial
// state is left.
func assertFinal(t *testing.T, it Item, data []byte) {
	t.Helper()
	got, err := os.ReadFile(it.Dest)
	if err != nil {
		t.Fatalf("final file: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("final file differs from served content (%d vs %d bytes)", len(got), len(data))
	}
	for _, p := range []string{it.partPath(), it.partPath() + ".json"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after success (err=%v)", p, err)
		}
	}
}

// assertNoFinal checks nothing got the final name.
func assertNoFinal(t *testing.T, it Item) {
	t.Helper()
	if _, err := os.Stat(it.Dest); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("destination %s exists after a failure (err=%v)", it.Dest, err)
	}
}

func fetchOne(t *testing.T, f *Fetcher, it Item) error {
	t.Helper()
	res, err := f.Fetch(context.Background(), []Item{it})
	if len(res) != 1 {
		t.Fatalf("got %d results", len(res))
	}
	if (err == nil) != (res[0].Err == nil) {
		t.Fatalf("joined error %v disagrees with item error %v", err, res[0].Err)
	}
	return err
}

// partial leaves a part file of roughly half the content by dropping the
// connection once with a single attempt allowed.
func (e *env) partial(name string, it Item, at int64) {
	e.t.Helper()
	e.fault(name, testindex.Fault{Drop: true, DropAfter: at, Times: 1})
	err := fetchOne(e.t, e.fetcher(func(o *Options) { o.MaxAttempts = 1 }), it)
	if err == nil {
		e.t.Fatal("download with a dropped connection and one attempt succeeded")
	}
	fi, err := os.Stat(it.partPath())
	if err != nil || fi.Size() == 0 {
		e.t.Fatalf("no partial file after a dropped connection: %v", err)
	}
	if _, err := os.Stat(it.partPath() + ".json"); err != nil {
		e.t.Fatalf("no resume record: %v", err)
	}
}

func TestDownload(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("demo-1.0-py3-none-any.whl", 300_000)
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	if st := e.stats(it.Name); st.Requests != 1 || st.Bytes != int64(len(data)) {
		t.Errorf("server stats %+v, want 1 request and %d bytes", st, len(data))
	}
	// Second run: cached, no request.
	res, err := e.fetcher(nil).Fetch(context.Background(), []Item{it})
	if err != nil || !res[0].Cached {
		t.Fatalf("second fetch: cached=%v err=%v", res[0].Cached, err)
	}
	if st := e.stats(it.Name); st.Requests != 1 {
		t.Errorf("cached fetch made a request: %+v", st)
	}
}

func TestFaultDropResumes(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("drop-1.0-py3-none-any.whl", 1_000_000)
	e.fault(it.Name, testindex.Fault{Drop: true, DropAfter: 300_000, Times: 2})
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	st := e.stats(it.Name)
	// Two drops of 300 kB each, then resumes: served bytes stay well under
	// two copies (a restart from zero would exceed 1.3 MB).
	if st.Bytes > int64(len(data))+64<<10 {
		t.Errorf("served %d bytes for a %d-byte file: drops did not resume", st.Bytes, len(data))
	}
	if st.Requests != 3 {
		t.Errorf("requests = %d, want 3 (two dropped, one resumed)", st.Requests)
	}
	if n := len(e.sleeps.all()); n != 2 {
		t.Errorf("slept %d times, want 2 backoffs", n)
	}
}

func TestSmallFileRestartsWithoutRecord(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("small-1.0-py3-none-any.whl", 100_000)
	e.fault(it.Name, testindex.Fault{Drop: true, DropAfter: 60_000, Times: 1})
	f := e.fetcher(func(o *Options) { o.ResumeMinSize = 0; o.MaxAttempts = 1 })
	if err := fetchOne(t, f, it); err == nil {
		t.Fatal("dropped download succeeded with one attempt")
	}
	if _, err := os.Stat(it.partPath() + ".json"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a 100 kB file got a resume record: %v", err)
	}
	if err := fetchOne(t, e.fetcher(func(o *Options) { o.ResumeMinSize = 0 }), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	if st := e.stats(it.Name); st.Bytes != 60_000+int64(len(data)) {
		t.Errorf("served %d bytes, want the dropped 60000 plus a full copy", st.Bytes)
	}
}

func TestResumeAcrossFetchers(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("res-1.0-py3-none-any.whl", 500_000)
	e.partial(it.Name, it, 200_000)
	e.fault(it.Name, testindex.Fault{})
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	if st := e.stats(it.Name); st.Bytes != int64(len(data))-200_000 {
		t.Errorf("resume served %d bytes, want %d", st.Bytes, len(data)-200_000)
	}
}

func TestFaultRangeIgnoredRestartsFromZero(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault testindex.Fault
	}{
		{"200-to-range", testindex.Fault{IgnoreRange: true}},
		{"no-range-support", testindex.Fault{NoRanges: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			data, it := e.addFile("rng-1.0-py3-none-any.whl", 400_000)
			e.partial(it.Name, it, 150_000)
			e.fault(it.Name, tc.fault)
			if err := fetchOne(t, e.fetcher(nil), it); err != nil {
				t.Fatal(err)
			}
			assertFinal(t, it, data)
			st := e.stats(it.Name)
			if st.Requests != 2 {
				t.Errorf("requests = %d, want 2 (refused 200 to Range, then a full GET)", st.Requests)
			}
			if st.Bytes < int64(len(data)) {
				t.Errorf("served %d bytes: the restart was not from zero", st.Bytes)
			}
		})
	}
}

func TestChangedRepresentationRestarts(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("chg-1.0-py3-none-any.whl", 400_000)
	e.partial(it.Name, it, 100_000)
	// Same bytes, new version: the ETag changes, so If-Range must fail and
	// the server answers 200; appending it would corrupt the file.
	if err := e.idx.AddWheel(it.Name, testindex.Bytes(data)); err != nil {
		t.Fatal(err)
	}
	e.fault(it.Name, testindex.Fault{})
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	// The 200 answer to the stale If-Range is refused, then a full GET.
	if st := e.stats(it.Name); st.Requests != 2 || st.Bytes < int64(len(data)) {
		t.Errorf("stats %+v: want the ranged request refused and a full download", st)
	}
}

func TestFaultCorrupt(t *testing.T) {
	t.Run("once", func(t *testing.T) {
		e := newEnv(t)
		data, it := e.addFile("cor-1.0-py3-none-any.whl", 200_000)
		e.fault(it.Name, testindex.Fault{Corrupt: true, CorruptAt: 12345, Times: 1})
		if err := fetchOne(t, e.fetcher(nil), it); err != nil {
			t.Fatal(err)
		}
		assertFinal(t, it, data)
		if st := e.stats(it.Name); st.Requests != 2 {
			t.Errorf("requests = %d, want 2 (corrupt, then clean from zero)", st.Requests)
		}
	})
	t.Run("always", func(t *testing.T) {
		e := newEnv(t)
		_, it := e.addFile("cor-1.0-py3-none-any.whl", 200_000)
		e.fault(it.Name, testindex.Fault{Corrupt: true, CorruptAt: 199_999})
		err := fetchOne(t, e.fetcher(nil), it)
		var de *DigestError
		if !errors.As(err, &de) {
			t.Fatalf("want a DigestError, got %v", err)
		}
		msg := err.Error()
		for _, want := range []string{it.URLs[0], it.Digest.Hex, de.Got, it.Name} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not name %q", msg, want)
			}
		}
		assertNoFinal(t, it)
		if _, err := os.Stat(it.partPath()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("corrupt part file kept: %v", err)
		}
		if st := e.stats(it.Name); st.Requests != 2 {
			t.Errorf("requests = %d, want exactly 2 (one retry from zero)", st.Requests)
		}
	})
}

func TestFaultStatus(t *testing.T) {
	t.Run("503-then-ok", func(t *testing.T) {
		e := newEnv(t)
		data, it := e.addFile("s5-1.0-py3-none-any.whl", 10_000)
		e.fault(it.Name, testindex.Fault{Status: 503, Times: 3})
		if err := fetchOne(t, e.fetcher(nil), it); err != nil {
			t.Fatal(err)
		}
		assertFinal(t, it, data)
		s := e.sleeps.all()
		if len(s) != 3 {
			t.Fatalf("sleeps %v, want 3", s)
		}
		// Exponential with 50-100% jitter: 0.5-1s, 1-2s, 2-4s.
		for i, d := range s {
			lo, hi := time.Second<<i/2, time.Second<<i
			if d < lo || d > hi {
				t.Errorf("backoff %d = %v, want in [%v, %v]", i+1, d, lo, hi)
			}
		}
	})
	t.Run("429-retry-after", func(t *testing.T) {
		e := newEnv(t)
		data, it := e.addFile("s4-1.0-py3-none-any.whl", 10_000)
		e.fault(it.Name, testindex.Fault{Status: 429, RetryAfter: "7", Times: 2})
		if err := fetchOne(t, e.fetcher(nil), it); err != nil {
			t.Fatal(err)
		}
		assertFinal(t, it, data)
		if s := e.sleeps.all(); len(s) != 2 || s[0] != 7*time.Second || s[1] != 7*time.Second {
			t.Errorf("sleeps %v, want [7s 7s] from Retry-After", s)
		}
	})
	t.Run("503-forever", func(t *testing.T) {
		e := newEnv(t)
		_, it := e.addFile("s5f-1.0-py3-none-any.whl", 10_000)
		e.fault(it.Name, testindex.Fault{Status: 503})
		err := fetchOne(t, e.fetcher(func(o *Options) { o.MaxAttempts = 3 }), it)
		if err == nil || !strings.Contains(err.Error(), "HTTP 503") || !strings.Contains(err.Error(), it.URLs[0]) || !strings.Contains(err.Error(), "3 attempts") {
			t.Fatalf("error %v should name HTTP 503, the URL and the attempts", err)
		}
		assertNoFinal(t, it)
	})
	t.Run("404-fails-fast", func(t *testing.T) {
		e := newEnv(t)
		_, it := e.addFile("s404-1.0-py3-none-any.whl", 10_000)
		e.fault(it.Name, testindex.Fault{Status: 404})
		err := fetchOne(t, e.fetcher(nil), it)
		var se *StatusError
		if !errors.As(err, &se) || se.Status != 404 || !strings.Contains(err.Error(), it.URLs[0]) {
			t.Fatalf("want HTTP 404 naming the URL, got %v", err)
		}
		if st := e.stats(it.Name); st.Requests != 1 {
			t.Errorf("404 retried: %d requests", st.Requests)
		}
		if len(e.sleeps.all()) != 0 {
			t.Errorf("slept before failing on 404")
		}
	})
}

func TestFaultStall(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("stall-1.0-py3-none-any.whl", 300_000)
	e.fault(it.Name, testindex.Fault{Stall: time.Minute, StallAfter: 100_000, Times: 1})
	start := time.Now()
	err := fetchOne(t, e.fetcher(func(o *Options) { o.StallTimeout = 300 * time.Millisecond }), it)
	if err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("stall took %v to detect", d)
	}
	if st := e.stats(it.Name); st.Bytes > int64(len(data))+64<<10 {
		t.Errorf("served %d bytes: the stalled download did not resume", st.Bytes)
	}
}

func TestFaultWrongContentLength(t *testing.T) {
	for _, delta := range []int64{+1000, -1000} {
		t.Run(fmt.Sprint(delta), func(t *testing.T) {
			e := newEnv(t)
			data, it := e.addFile("wl-1.0-py3-none-any.whl", 50_000)
			e.fault(it.Name, testindex.Fault{WrongLength: delta, Times: 1})
			if err := fetchOne(t, e.fetcher(nil), it); err != nil {
				t.Fatal(err)
			}
			assertFinal(t, it, data)

			e2 := newEnv(t)
			_, it2 := e2.addFile("wl-1.0-py3-none-any.whl", 50_000)
			e2.fault(it2.Name, testindex.Fault{WrongLength: delta})
			err := fetchOne(t, e2.fetcher(func(o *Options) { o.MaxAttempts = 2 }), it2)
			if err == nil || !strings.Contains(err.Error(), "Content-Length") || !strings.Contains(err.Error(), it2.URLs[0]) {
				t.Fatalf("want an error naming Content-Length and the URL, got %v", err)
			}
			assertNoFinal(t, it2)
		})
	}
}

func TestMirrorFallback(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("mir-1.0-py3-none-any.whl", 20_000)
	if err := e.idx.AddFile("/mirror/mir.whl", testindex.Bytes(data)); err != nil {
		t.Fatal(err)
	}
	e.fault(it.Name, testindex.Fault{Status: 403})
	it.URLs = append(it.URLs, e.srv.URL+"/mirror/mir.whl")
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	if st := e.idx.Stats("/mirror/mir.whl"); st.Requests != 1 {
		t.Errorf("mirror requests = %d", st.Requests)
	}
}

func TestGitBlobAndSizeOnly(t *testing.T) {
	e := newEnv(t)
	data := []byte("{\"vocab\": [\"a\", \"b\"]}\n")
	if err := e.idx.AddFile("/hf/vocab.json", testindex.Bytes(data)); err != nil {
		t.Fatal(err)
	}
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	it := Item{Name: "vocab.json", URLs: []string{e.srv.URL + "/hf/vocab.json"}, Size: int64(len(data)),
		Digest: Digest{Kind: GitBlobSHA1, Hex: hex.EncodeToString(h.Sum(nil))}, Dest: filepath.Join(e.dir, "blob1")}
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)

	bad := it
	bad.Dest = filepath.Join(e.dir, "blob2")
	bad.Digest.Hex = strings.Repeat("0", 40)
	if err := fetchOne(t, e.fetcher(nil), bad); err == nil || !strings.Contains(err.Error(), "git-blob-sha1") {
		t.Fatalf("wrong git blob id accepted or unclear: %v", err)
	}
	assertNoFinal(t, bad)

	so := it
	so.Dest = filepath.Join(e.dir, "blob3")
	so.Digest = Digest{Kind: SizeOnly}
	if err := fetchOne(t, e.fetcher(nil), so); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, so, data)
}

func TestHTTPSPolicy(t *testing.T) {
	e := newEnv(t)
	it := Item{Name: "x", URLs: []string{"http://pypi.example.invalid/x.whl"}, Size: 1,
		Digest: Digest{Kind: SizeOnly}, Dest: filepath.Join(e.dir, "x.whl")}
	err := fetchOne(t, e.fetcher(nil), it)
	var pe *PolicyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "HTTPS is required") {
		t.Fatalf("plain http to a remote host: got %v", err)
	}
	// A redirect from loopback to a plain-http remote host is refused too.
	e.idx.Mux().HandleFunc("/redir", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://pypi.example.invalid/x.whl", http.StatusFound)
	})
	it.URLs = []string{e.srv.URL + "/redir"}
	err = fetchOne(t, e.fetcher(nil), it)
	if !errors.As(err, &pe) {
		t.Fatalf("redirect to plain http: got %v", err)
	}
}

func TestCredentialsStayOnTheirHost(t *testing.T) {
	e := newEnv(t)
	data := []byte("secret wheel content")
	var mu sync.Mutex
	seen := map[string]string{} // host -> Authorization
	port := e.srv.Listener.Addr().(*net.TCPAddr).Port
	e.idx.Mux().HandleFunc("/auth/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[strings.Split(r.Host, ":")[0]] = r.Header.Get("Authorization")
		mu.Unlock()
		if strings.HasPrefix(r.Host, "127.0.0.1") {
			// Same server, other host name: net/http would forward the
			// header for a subdomain; we must never.
			http.Redirect(w, r, fmt.Sprintf("http://localhost:%d/auth/file", port), http.StatusFound)
			return
		}
		w.Write(data)
	})
	env := map[string]string{"VOLBOOT_AUTH_127_0_0_1": "alice:hunter2"}
	creds, err := LoadCredentials(CredentialSources{Getenv: func(k string) string { return env[k] }, NetrcPath: filepath.Join(e.dir, "none")})
	if err != nil {
		t.Fatal(err)
	}
	it := Item{Name: "auth", URLs: []string{e.srv.URL + "/auth/file"}, Size: int64(len(data)),
		Digest: Digest{Kind: SizeOnly}, Dest: filepath.Join(e.dir, "auth.bin")}
	if err := fetchOne(t, e.fetcher(func(o *Options) { o.Credentials = creds }), it); err != nil {
		t.Fatal(err)
	}
	if got := seen["127.0.0.1"]; got != "Basic YWxpY2U6aHVudGVyMg==" {
		t.Errorf("127.0.0.1 got Authorization %q", got)
	}
	if got := seen["localhost"]; got != "" {
		t.Errorf("credential crossed the redirect to localhost: %q", got)
	}
	for _, entry := range e.logs.All() {
		if strings.Contains(fmt.Sprint(entry.Message, entry.ContextMap()), "hunter2") {
			t.Errorf("password logged: %v", entry)
		}
	}
}

func TestProgressPhase(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("torch-2.8.0-cp311-cp311-linux_x86_64.whl", 2_000_000)
	it.Name = "torch-2.8.0"
	e.fault(it.Name+"-cp311-cp311-linux_x86_64.whl", testindex.Fault{Stall: 1500 * time.Millisecond, StallAfter: 1_000_000, Times: 1})
	var mu sync.Mutex
	var phases []string
	f := e.fetcher(func(o *Options) {
		o.StallTimeout = time.Minute
		o.Progress.LogInterval = 300 * time.Millisecond
		o.Progress.Phase = func(s string) { mu.Lock(); phases = append(phases, s); mu.Unlock() }
	})
	if err := fetchOne(t, f, it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	mu.Lock()
	defer mu.Unlock()
	found := false
	for _, p := range phases {
		if strings.HasPrefix(p, "downloading torch-2.8.0 (") && strings.Contains(p, "%)") {
			found = true
		}
	}
	if !found {
		t.Errorf("no per-file phase among %q", phases)
	}
	lines := e.logs.FilterMessage("download progress").All()
	if len(lines) == 0 {
		t.Fatal("no progress log line")
	}
	m := lines[0].ContextMap()
	for _, k := range []string{"done", "total", "rate"} {
		if _, ok := m[k]; !ok {
			t.Errorf("progress line lacks %q: %v", k, m)
		}
	}
}

// FetchEach reports each file as soon as it is in place, while slower ones
// still download; never a failed one; a cached one too.
func TestFetchEachReportsEachFileAsItLands(t *testing.T) {
	e := newEnv(t)
	fastData, fast := e.addFile("fast-1.0-py3-none-any.whl", 20_000)
	_, slow := e.addFile("slow-1.0-py3-none-any.whl", 30_000)
	e.fault(slow.Name, testindex.Fault{Stall: 3 * time.Second, StallAfter: 1000})
	_, missing := e.addFile("missing-1.0-py3-none-any.whl", 1000)
	e.fault(missing.Name, testindex.Fault{Status: 404})
	cachedData, cached := e.addFile("cached-1.0-py3-none-any.whl", 5000)
	if err := os.WriteFile(cached.Dest, cachedData, 0o644); err != nil {
		t.Fatal(err)
	}
	items := []Item{slow, fast, missing, cached}
	var mu sync.Mutex
	var got []int
	slowDone := false
	res, err := e.fetcher(func(o *Options) { o.StallTimeout = time.Minute }).FetchEach(context.Background(), items, func(i int) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, i)
		if i == 1 {
			// The fast file is whole and verified while the slow one is
			// still stalled.
			if b, err := os.ReadFile(fast.Dest); err != nil || !bytes.Equal(b, fastData) {
				t.Errorf("fast reported before its file was in place: %v", err)
			}
			if _, err := os.Stat(slow.Dest); err == nil {
				t.Error("fast reported only after the slow download finished")
			}
		}
		if i == 0 {
			slowDone = true
		}
	})
	if err == nil || res[2].Err == nil {
		t.Fatalf("the 404 did not fail: %v", err)
	}
	for _, i := range []int{0, 1, 3} {
		if res[i].Err != nil {
			t.Fatalf("%s: %v", items[i].Name, res[i].Err)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{0, 1, 3}) || !slowDone {
		t.Fatalf("reported %v, want [0 1 3] (each success once, not the 404)", got)
	}
}

// TestPhaseCountsFailures: the last phase of a fetch in which one file
// failed says so, instead of counting it among the downloaded (status
// said "downloaded 5 of 5" while one had 404ed: issue 15, item 7).
func TestPhaseCountsFailures(t *testing.T) {
	e := newEnv(t)
	_, good := e.addFile("good-1.0-py3-none-any.whl", 5000)
	_, missing := e.addFile("missing-1.0-py3-none-any.whl", 1000)
	e.fault(missing.Name, testindex.Fault{Status: 404})
	var mu sync.Mutex
	var phases []string
	f := e.fetcher(func(o *Options) {
		o.Progress.Phase = func(s string) { mu.Lock(); phases = append(phases, s); mu.Unlock() }
	})
	if _, err := f.FetchEach(context.Background(), []Item{good, missing}, nil); err == nil {
		t.Fatal("the 404 did not fail")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(phases) == 0 || phases[len(phases)-1] != "downloaded 1 of 2 files, 1 failed" {
		t.Fatalf("phases %q, want the last to be %q", phases, "downloaded 1 of 2 files, 1 failed")
	}
}
