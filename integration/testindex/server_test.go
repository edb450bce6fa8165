package testindex

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func start(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	s := New()
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	return s, srv
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestIndexNegotiation(t *testing.T) {
	dir := t.TempDir()
	wheel := []byte("not really a zip")
	os.WriteFile(filepath.Join(dir, "Foo_Bar-1.0-py3-none-any.whl"), wheel, 0o644)
	os.WriteFile(filepath.Join(dir, "README"), []byte("ignored"), 0o644)
	s, srv := start(t)
	if err := s.AddWheelDir(dir); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(wheel)
	sha := hex.EncodeToString(sum[:])

	resp, body, err := get(t, srv.URL+"/simple/foo-bar/", nil)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != htmlType {
		t.Fatalf("HTML page: %v %v", err, resp)
	}
	if !strings.Contains(string(body), `href="/files/Foo_Bar-1.0-py3-none-any.whl#sha256=`+sha+`"`) {
		t.Errorf("HTML page lacks the link with its hash:\n%s", body)
	}

	resp, body, err = get(t, srv.URL+"/simple/Foo.Bar/", map[string]string{"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.5"})
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != jsonType {
		t.Fatalf("JSON page via redirect: %v %+v", err, resp)
	}
	var page struct {
		Meta  map[string]string `json:"meta"`
		Name  string            `json:"name"`
		Files []struct {
			Filename string            `json:"filename"`
			URL      string            `json:"url"`
			Hashes   map[string]string `json:"hashes"`
			Size     int64             `json:"size"`
		} `json:"files"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	if page.Name != "foo-bar" || len(page.Files) != 1 || page.Files[0].Hashes["sha256"] != sha || page.Files[0].Size != int64(len(wheel)) {
		t.Errorf("JSON page %+v", page)
	}
	_, f, _ := get(t, srv.URL+page.Files[0].URL, nil)
	if !bytes.Equal(f, wheel) {
		t.Errorf("file body %q", f)
	}
	_, root, _ := get(t, srv.URL+"/simple/", map[string]string{"Accept": "application/vnd.pypi.simple.v1+json"})
	if string(root) != `{"meta":{"api-version":"1.1"},"projects":[{"name":"foo-bar"}]}` {
		t.Errorf("root JSON %s", root)
	}
	if wantsJSON("application/vnd.pypi.simple.v1+json;q=0.2, text/html") {
		t.Error("lower q JSON preferred over HTML")
	}
}

func TestRangesAndIfRange(t *testing.T) {
	s, srv := start(t)
	data := []byte("0123456789abcdefghij")
	s.AddFile("/x", Bytes(data))
	resp, body, _ := get(t, srv.URL+"/x", map[string]string{"Range": "bytes=5-"})
	if resp.StatusCode != 206 || string(body) != string(data[5:]) || resp.Header.Get("Content-Range") != "bytes 5-19/20" {
		t.Fatalf("range: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Range"))
	}
	etag := resp.Header.Get("ETag")
	resp, _, _ = get(t, srv.URL+"/x", map[string]string{"Range": "bytes=5-", "If-Range": etag})
	if resp.StatusCode != 206 {
		t.Errorf("matching If-Range: %d", resp.StatusCode)
	}
	resp, body, _ = get(t, srv.URL+"/x", map[string]string{"Range": "bytes=5-", "If-Range": `"other"`})
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Errorf("stale If-Range: %d", resp.StatusCode)
	}
	lm := resp.Header.Get("Last-Modified")
	resp, _, _ = get(t, srv.URL+"/x", map[string]string{"Range": "bytes=5-", "If-Range": lm})
	if resp.StatusCode != 206 {
		t.Errorf("date If-Range: %d", resp.StatusCode)
	}
	s.AddFile("/x", Bytes(data)) // new version: new ETag
	resp, _, _ = get(t, srv.URL+"/x", map[string]string{"Range": "bytes=5-", "If-Range": etag})
	if resp.StatusCode != 200 {
		t.Errorf("If-Range after replacement: %d", resp.StatusCode)
	}
	resp, _, _ = get(t, srv.URL+"/x", map[string]string{"Range": "bytes=50-"})
	if resp.StatusCode != 416 {
		t.Errorf("unsatisfiable range: %d", resp.StatusCode)
	}
}

func TestFaults(t *testing.T) {
	data := bytes.Repeat([]byte("abcdefgh"), 40_000) // 320 kB
	cases := []struct {
		name  string
		fault Fault
		hdr   map[string]string
		check func(t *testing.T, resp *http.Response, body []byte, err error)
	}{
		{"drop", Fault{Drop: true, DropAfter: 100_000}, nil, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 100_000 {
				t.Errorf("got %d bytes, err %v", len(body), err)
			}
		}},
		{"status-429", Fault{Status: 429, RetryAfter: "3"}, nil, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" {
				t.Errorf("got %d %q", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		}},
		{"ignore-range", Fault{IgnoreRange: true}, map[string]string{"Range": "bytes=10-"}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if resp.StatusCode != 200 || resp.Header.Get("Accept-Ranges") != "bytes" || len(body) != len(data) {
				t.Errorf("got %d, %d bytes", resp.StatusCode, len(body))
			}
		}},
		{"no-ranges", Fault{NoRanges: true}, map[string]string{"Range": "bytes=10-"}, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if resp.StatusCode != 200 || resp.Header.Get("Accept-Ranges") != "" || len(body) != len(data) {
				t.Errorf("got %d, %d bytes", resp.StatusCode, len(body))
			}
		}},
		{"corrupt", Fault{Corrupt: true, CorruptAt: 7}, nil, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || len(body) != len(data) || body[7] == data[7] || !bytes.Equal(body[8:], data[8:]) {
				t.Errorf("corruption wrong: err %v", err)
			}
		}},
		{"wrong-length-long", Fault{WrongLength: 10}, nil, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if resp.ContentLength != int64(len(data))+10 || err == nil {
				t.Errorf("Content-Length %d, err %v", resp.ContentLength, err)
			}
		}},
		{"wrong-length-short", Fault{WrongLength: -10}, nil, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if resp.ContentLength != int64(len(data))-10 || len(body) != len(data)-10 {
				t.Errorf("Content-Length %d, %d bytes", resp.ContentLength, len(body))
			}
		}},
		{"stall", Fault{Stall: 300 * time.Millisecond, StallAfter: 1000}, nil, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || len(body) != len(data) {
				t.Errorf("stall: %v", err)
			}
		}},
		{"rate", Fault{Rate: int64(len(data)) * 4}, nil, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || !bytes.Equal(body, data) {
				t.Errorf("rate: %v", err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, srv := start(t)
			s.AddFile("/f", Bytes(data))
			c.fault.Times = 1
			if err := s.SetFault("/f", c.fault); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			resp, body, err := get(t, srv.URL+"/f", c.hdr)
			if resp == nil {
				t.Fatal(err)
			}
			if c.name == "stall" && time.Since(began) < 300*time.Millisecond {
				t.Error("no stall")
			}
			// 320 kB at 1.28 MB/s: the last chunk leaves at 0.25 s.
			if c.name == "rate" && time.Since(began) < 250*time.Millisecond {
				t.Errorf("320 kB at %d B/s took %v", c.fault.Rate, time.Since(began))
			}
			c.check(t, resp, body, err)
			// Times: 1 — the second request is clean.
			resp, body, err = get(t, srv.URL+"/f", nil)
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, data) {
				t.Errorf("second request not clean: %v", err)
			}
			st := s.Stats("/f")
			if st.Requests != 2 {
				t.Errorf("requests %d", st.Requests)
			}
		})
	}
}

func TestStatsConcurrent(t *testing.T) {
	s, srv := start(t)
	data := bytes.Repeat([]byte{1}, 10_000)
	s.AddFile("/c", Bytes(data))
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			get(t, srv.URL+"/c", nil)
		}()
	}
	wg.Wait()
	if st := s.Stats("/c"); st.Requests != 20 || st.Bytes != 200_000 {
		t.Errorf("stats %+v", st)
	}
}

func TestGenerated(t *testing.T) {
	g := NewGenerated(3<<20+123, 9)
	all := make([]byte, g.Size())
	if n, err := g.ReadAt(all, 0); n != len(all) || err != nil {
		t.Fatalf("ReadAt all: %d %v", n, err)
	}
	for _, off := range []int64{0, 3, 8, 1<<20 - 4, 1 << 20, 2<<20 + 5, g.Size() - 10} {
		p := make([]byte, 100)
		n, _ := g.ReadAt(p, off)
		if !bytes.Equal(p[:n], all[off:off+int64(n)]) {
			t.Errorf("ReadAt(%d) inconsistent", off)
		}
	}
	if bytes.Equal(all[:1<<20], all[1<<20:2<<20]) {
		t.Error("blocks repeat")
	}
}

func TestTree(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "b", "c.txt"), []byte("tree"), 0o644)
	s, srv := start(t)
	if err := s.AddTree("/hub/", dir); err != nil {
		t.Fatal(err)
	}
	s.Mux().HandleFunc("/api/ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "pong") })
	if _, b, _ := get(t, srv.URL+"/hub/a/b/c.txt", nil); string(b) != "tree" {
		t.Errorf("tree file %q", b)
	}
	if _, b, _ := get(t, srv.URL+"/api/ping", nil); string(b) != "pong" {
		t.Errorf("extra handler %q", b)
	}
}

func TestParseFault(t *testing.T) {
	f, err := ParseFault("status=429,retry-after=2,times=3,drop=100,ignore-range,no-ranges,corrupt=5,stall=1s@10,wrong-length=-4,rate=1000")
	want := Fault{Times: 3, Status: 429, RetryAfter: "2", Drop: true, DropAfter: 100, IgnoreRange: true, NoRanges: true,
		Corrupt: true, CorruptAt: 5, Stall: time.Second, StallAfter: 10, WrongLength: -4, Rate: 1000}
	if err != nil || f != want {
		t.Fatalf("got %+v %v", f, err)
	}
	for _, bad := range []string{"status=9999", "drop", "bogus", "stall=-1s", "times=x", "rate=0"} {
		if _, err := ParseFault(bad); err == nil {
			t.Errorf("ParseFault(%q) accepted", bad)
		}
	}
}

func FuzzParseFault(f *testing.F) {
	f.Add("status=503,times=2")
	f.Add("stall=5s@100,drop=7")
	f.Fuzz(func(t *testing.T, s string) {
		fl, err := ParseFault(s)
		if err != nil {
			return
		}
		if fl.Times < 0 || fl.DropAfter < 0 || fl.CorruptAt < 0 || fl.StallAfter < 0 || fl.Stall < 0 || fl.Rate < 0 {
			t.Fatalf("negative field from %q: %+v", s, fl)
		}
	})
}
