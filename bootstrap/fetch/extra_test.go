package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volboot/volboot/integration/testindex"
)

func TestCheckPartial(t *testing.T) {
	mk := func(status int, cr string, cl int64) *http.Response {
		h := http.Header{}
		if cr != "" {
			h.Set("Content-Range", cr)
		}
		return &http.Response{StatusCode: status, Header: h, ContentLength: cl}
	}
	if err := checkPartial(mk(206, "bytes 100-999/1000", 900), 100, 1000); err != nil {
		t.Fatalf("valid 206 refused: %v", err)
	}
	for _, tc := range []struct {
		resp *http.Response
		why  string
	}{
		{mk(200, "", 1000), "200"},
		{mk(206, "bytes 0-999/1000", 1000), "wrong start"},
		{mk(206, "bytes 100-999/2000", 900), "other total"},
		{mk(206, "bytes 100-499/1000", 400), "short range"},
		{mk(206, "bytes 100-999/*", 900), "unknown total"},
		{mk(206, "", 900), "no Content-Range"},
		{mk(206, "bytes 100-999/1000", 10), "Content-Length disagrees"},
	} {
		err := checkPartial(tc.resp, 100, 1000)
		var re *restartError
		if !errors.As(err, &re) {
			t.Errorf("%s: got %v, want a restart", tc.why, err)
		}
	}
}

func FuzzCheckPartial(f *testing.F) {
	f.Add("bytes 10-99/100", int64(10), int64(100))
	f.Add("bytes 0-0/1", int64(0), int64(1))
	f.Add("bytes 5-2/3", int64(5), int64(3))
	f.Fuzz(func(t *testing.T, cr string, start, total int64) {
		h := http.Header{}
		h.Set("Content-Range", cr)
		err := checkPartial(&http.Response{StatusCode: 206, Header: h, ContentLength: -1}, start, total)
		if err != nil {
			return
		}
		m := contentRange.FindStringSubmatch(strings.TrimSpace(cr))
		if m == nil || start < 0 || start > total-1 {
			t.Fatalf("accepted %q for start %d total %d", cr, start, total)
		}
		if s, _ := strconv.ParseInt(m[1], 10, 64); s != start {
			t.Fatalf("accepted %q starting at %d for start %d", cr, s, start)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"120": 2 * time.Minute, "0": 0, "-5": 0, "soon": 0, "": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestCancelKeepsPartThenResumes(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("can-1.0-py3-none-any.whl", 600_000)
	e.fault(it.Name, testindex.Fault{Stall: time.Minute, StallAfter: 250_000, Times: 1})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if fi, err := os.Stat(it.partPath()); err == nil && fi.Size() >= 250_000 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := e.fetcher(func(o *Options) { o.StallTimeout = time.Minute }).Fetch(ctx, []Item{it})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fetch: %v", err)
	}
	assertNoFinal(t, it)
	if fi, err := os.Stat(it.partPath()); err != nil || fi.Size() != 250_000 {
		t.Fatalf("part after cancel: %v", err)
	}
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	if st := e.stats(it.Name); st.Bytes != int64(len(data)) {
		t.Errorf("served %d bytes in total, want exactly one copy", st.Bytes)
	}
}

func TestUnknownSizeResumes(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("unk-1.0-py3-none-any.whl", 400_000)
	it.Size = -1
	e.fault(it.Name, testindex.Fault{Drop: true, DropAfter: 150_000, Times: 1})
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	if st := e.stats(it.Name); st.Bytes != int64(len(data)) {
		t.Errorf("served %d bytes, want %d (resumed with the size from Content-Length)", st.Bytes, len(data))
	}
}

func TestTerminalProgress(t *testing.T) {
	e := newEnv(t)
	var out bytes.Buffer
	var items []Item
	for i, n := range []string{"a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"} {
		_, it := e.addFile(n, 200_000+i)
		e.fault(n, testindex.Fault{Stall: 600 * time.Millisecond, StallAfter: 100_000, Times: 1})
		items = append(items, it)
	}
	f := e.fetcher(func(o *Options) { o.Progress = ProgressOptions{Terminal: true, Output: &out} })
	if _, err := f.Fetch(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "total (2 files)") {
		t.Errorf("no total bar in %q", out.String())
	}
}

func TestItemValidation(t *testing.T) {
	e := newEnv(t)
	f := e.fetcher(nil)
	items := []Item{
		{Name: "nourl", Size: 1, Dest: "/tmp/x"},
		{Name: "badhex", URLs: []string{"https://h/x"}, Size: 1, Digest: Digest{Kind: SHA256, Hex: "zz"}, Dest: "/tmp/y"},
		{Name: "blobnosize", URLs: []string{"https://h/x"}, Size: -1, Digest: Digest{Kind: GitBlobSHA1, Hex: strings.Repeat("a", 40)}, Dest: "/tmp/z"},
	}
	res, err := f.Fetch(context.Background(), items)
	if err == nil {
		t.Fatal("invalid items accepted")
	}
	for i, r := range res {
		if r.Err == nil || !strings.Contains(r.Err.Error(), items[i].Name) {
			t.Errorf("item %s: error %v does not name it", items[i].Name, r.Err)
		}
	}
}

// gateContent blocks reads that start at or beyond offset at until open
// is closed.
type gateContent struct {
	testindex.Content
	at   int64
	open chan struct{}
}

func (g *gateContent) ReadAt(p []byte, off int64) (int, error) {
	if off >= g.at {
		<-g.open
	}
	return g.Content.ReadAt(p, off)
}

// TestReplacedPartNeverNamed: another writer (whose volume lock failed)
// replaces the part file while we download. Our stream verifies, but the
// file at the part path is not what we verified, so it must not be renamed
// to the final name; the download retries and ends byte-identical.
func TestReplacedPartNeverNamed(t *testing.T) {
	for _, mode := range []string{"replace", "append"} {
		t.Run(mode, func(t *testing.T) { testOtherWriter(t, mode) })
	}
}

// testOtherWriter plays the other writer: it replaces the part file or
// appends to it while our download is paused mid-way.
func testOtherWriter(t *testing.T, mode string) {
	e := newEnv(t)
	data, it := e.addFile("race-1.0-py3-none-any.whl", 400_000)
	gate := &gateContent{Content: testindex.Bytes(data), at: 200_000, open: make(chan struct{})}
	if err := e.idx.AddWheel(it.Name, gate); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(gate.open)
		for i := 0; i < 10_000; i++ {
			if fi, err := os.Stat(it.partPath()); err == nil && fi.Size() >= 200_000 {
				garbage := bytes.Repeat([]byte("garbage!"), 12_500)
				if mode == "replace" {
					os.Remove(it.partPath())
					os.WriteFile(it.partPath(), garbage, 0o644)
					return
				}
				f, err := os.OpenFile(it.partPath(), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Error(err)
					return
				}
				f.Write(garbage)
				f.Close()
				return
			}
			time.Sleep(time.Millisecond)
		}
		t.Error("download never reached the gate")
	}()
	err := fetchOne(t, e.fetcher(nil), it)
	if err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	found := false
	for _, l := range e.logs.All() {
		if msg, _ := l.ContextMap()["error"].(string); strings.Contains(msg, "replaced by another writer") {
			found = true
		}
	}
	if !found {
		t.Error("the replaced part was not detected")
	}
}

// TestRange416Restarts: a server that answers 416 to our resume range makes
// us start over from zero, not give up.
func TestRange416Restarts(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("r416-1.0-py3-none-any.whl", 300_000)
	e.partial(it.Name, it, 100_000)
	var ranged, full int
	var mu sync.Mutex
	e.idx.Mux().HandleFunc("/r416", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Range") != "" {
			ranged++
			w.Header().Set("Content-Range", "bytes */300000")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		full++
		w.Header().Set("ETag", `"x"`)
		w.Write(data)
	})
	// The resume record names the original URL; point it at the handler.
	metaPath := it.partPath() + ".json"
	m, err := readMeta(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	it.URLs = []string{e.srv.URL + "/r416"}
	m.URL = it.URLs[0]
	b, _ := jsonMarshal(m)
	os.WriteFile(metaPath, b, 0o644)
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	if ranged != 1 || full != 1 {
		t.Errorf("ranged %d, full %d requests; want 1 and 1", ranged, full)
	}
}

// TestSecretsNotInErrorsOrRecords: a URL with a password and a signed
// query reaches neither the error, the logs nor the resume record.
func TestSecretsNotInErrorsOrRecords(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("sec-1.0-py3-none-any.whl", 300_000)
	u := strings.Replace(it.URLs[0], "http://", "http://bob:s3cr3tpw@", 1) + "?X-Amz-Signature=deadbeefsig"
	it.URLs = []string{u}
	e.fault(it.Name, testindex.Fault{Drop: true, DropAfter: 100_000, Times: 1})
	if err := fetchOne(t, e.fetcher(func(o *Options) { o.MaxAttempts = 1 }), it); err == nil {
		t.Fatal("dropped download succeeded")
	}
	rec, err := os.ReadFile(it.partPath() + ".json")
	if err != nil {
		t.Fatal(err)
	}
	e.fault(it.Name, testindex.Fault{Status: 404})
	err = fetchOne(t, e.fetcher(nil), it)
	if err == nil {
		t.Fatal("404 succeeded")
	}
	var logs strings.Builder
	for _, l := range e.logs.All() {
		logs.WriteString(l.Message + " " + strings.ReplaceAll(strings.TrimSpace(strings.Join(strings.Fields(fmtMap(l.ContextMap())), " ")), "\n", " "))
	}
	for what, s := range map[string]string{"error": err.Error(), "resume record": string(rec), "logs": logs.String()} {
		if strings.Contains(s, "s3cr3tpw") || strings.Contains(s, "deadbeefsig") {
			t.Errorf("%s leaks a secret: %s", what, s)
		}
	}
	// And the resume record still works for the same (secret) URL.
	e.fault(it.Name, testindex.Fault{})
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
}

func fmtMap(m map[string]any) string {
	var b strings.Builder
	for k, v := range m {
		b.WriteString(k + "=" + strings.TrimSpace(strings.ReplaceAll(fmt.Sprint(v), "\n", " ")) + " ")
	}
	return b.String()
}

// TestNoHEADReachesServer: grab's HEAD probes are answered locally, so a
// server whose HEAD lies (length 0) or refuses (signed GET-only URLs)
// changes nothing, even when the size is unknown.
func TestNoHEADReachesServer(t *testing.T) {
	e := newEnv(t)
	data := bytes.Repeat([]byte("0123456789"), 30_000)
	sum := sha256.Sum256(data)
	var heads int
	var mu sync.Mutex
	e.idx.Mux().HandleFunc("/lying-head", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			mu.Lock()
			heads++
			mu.Unlock()
			w.Header().Set("Content-Length", "0")
			return
		}
		w.Write(data)
	})
	for _, size := range []int64{-1, int64(len(data))} {
		it := Item{Name: "lying", URLs: []string{e.srv.URL + "/lying-head"}, Size: size,
			Digest: Digest{Kind: SHA256, Hex: hex.EncodeToString(sum[:])}, Dest: filepath.Join(e.dir, fmt.Sprintf("lying%d", size))}
		if err := fetchOne(t, e.fetcher(nil), it); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		assertFinal(t, it, data)
	}
	if heads != 0 {
		t.Errorf("%d HEAD requests reached the server", heads)
	}
}
