package fakehub

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func start(t *testing.T, opt Options) *Servers {
	t.Helper()
	s, err := Start(New(opt))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func do(t *testing.T, method, url string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestResolveHeadersAndRedirects(t *testing.T) {
	s := start(t, Options{WeakETags: true})
	small := []byte("hello\n")
	commit, err := s.Hub.Commit("model", "org/m", map[string]File{
		"a.txt":     {Content: Bytes(small)},
		"w/big.bin": {Content: Bytes([]byte(strings.Repeat("x", 1000))), LFS: true},
	}, "main", "v1")
	if err != nil {
		t.Fatal(err)
	}
	git := sha1.Sum(append([]byte("blob 6\x00"), small...))

	r := do(t, "HEAD", s.URL+"/org/m/resolve/main/a.txt")
	if r.StatusCode != 200 || r.Header.Get("X-Repo-Commit") != commit || r.Header.Get("ETag") != `W/"`+hex.EncodeToString(git[:])+`"` || r.ContentLength != 6 {
		t.Fatalf("non-LFS HEAD: %d %v", r.StatusCode, r.Header)
	}
	r = do(t, "HEAD", s.URL+"/org/m/resolve/v1/w/big.bin")
	loc := r.Header.Get("Location")
	if r.StatusCode != 302 || !strings.HasPrefix(loc, s.CDNURL+"/blobs/") || r.Header.Get("X-Linked-Size") != "1000" || r.Header.Get("X-Linked-Etag") == "" {
		t.Fatalf("LFS HEAD: %d %v", r.StatusCode, r.Header)
	}
	// The CDN serves ranges and counts credentials that reached it.
	r = do(t, "GET", loc, "Range", "bytes=990-", "Authorization", "Bearer x")
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 206 || len(b) != 10 || s.Hub.Stats().CDNWithAuth != 1 {
		t.Fatalf("CDN range: %d %d bytes, stats %+v", r.StatusCode, len(b), s.Hub.Stats())
	}

	if r = do(t, "HEAD", s.URL+"/org/m/resolve/main/nope"); r.StatusCode != 404 || r.Header.Get("X-Error-Code") != "EntryNotFound" || r.Header.Get("X-Repo-Commit") != commit {
		t.Errorf("missing entry: %d %v", r.StatusCode, r.Header)
	}
	if r = do(t, "HEAD", s.URL+"/org/m/resolve/dev/a.txt"); r.StatusCode != 404 || r.Header.Get("X-Error-Code") != "RevisionNotFound" {
		t.Errorf("missing revision: %d %v", r.StatusCode, r.Header)
	}
	if r = do(t, "HEAD", s.URL+"/org/x/resolve/main/a.txt"); r.StatusCode != 401 {
		t.Errorf("missing repo without token: %d", r.StatusCode)
	}
	if r = do(t, "HEAD", s.URL+"/org/x/resolve/main/a.txt", "Authorization", "Bearer t"); r.StatusCode != 404 || r.Header.Get("X-Error-Code") != "RepoNotFound" {
		t.Errorf("missing repo with token: %d", r.StatusCode)
	}

	s.Hub.Rename("model", "org/m", "org/m2")
	s.Hub.RequireToken("model", "org/m2", "tok")
	if r = do(t, "HEAD", s.URL+"/org/m/resolve/main/w/big.bin"); r.StatusCode != 307 || r.Header.Get("Location") != "/org/m2/resolve/main/w/big.bin" {
		t.Errorf("renamed: %d %v", r.StatusCode, r.Header)
	}
	if r = do(t, "HEAD", s.URL+"/org/m2/resolve/main/a.txt"); r.StatusCode != 401 {
		t.Errorf("private without token: %d", r.StatusCode)
	}
	if r = do(t, "GET", s.URL+"/org/m2/resolve/"+commit+"/a.txt", "Authorization", "Bearer tok"); r.StatusCode != 200 {
		t.Errorf("private with token: %d", r.StatusCode)
	}

	r = do(t, "GET", s.URL+"/api/models/org/m2/revision/main", "Authorization", "Bearer tok")
	var ri struct {
		SHA      string `json:"sha"`
		Siblings []struct {
			RFilename string `json:"rfilename"`
		} `json:"siblings"`
	}
	if err := json.NewDecoder(r.Body).Decode(&ri); err != nil || ri.SHA != commit || len(ri.Siblings) != 2 || ri.Siblings[1].RFilename != "w/big.bin" {
		t.Errorf("revision API: %+v %v", ri, err)
	}
	if st := s.Hub.Stats(); st.HubHEAD != 8 || st.HubGET != 1 || st.API != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestFaults(t *testing.T) {
	s := start(t, Options{})
	data := []byte(strings.Repeat("abcdefgh", 1000))
	s.Hub.Commit("dataset", "org/d", map[string]File{"x.bin": {Content: Bytes(data), LFS: true}}, "main")
	etag, _ := s.Hub.ETag("dataset", "org/d", "main", "x.bin")
	url := s.CDNURL + "/blobs/" + etag

	s.Hub.FaultBlob(etag, Fault{Corrupt: true, CorruptAt: 3, Times: 1})
	b, _ := io.ReadAll(do(t, "GET", url).Body)
	if b[3] == data[3] || string(b[4:]) != string(data[4:]) {
		t.Error("corrupt fault did not flip exactly byte 3")
	}
	if b, _ = io.ReadAll(do(t, "GET", url).Body); string(b) != string(data) {
		t.Error("fault outlived Times")
	}
	s.Hub.FaultBlob(etag, Fault{DropAt: 100})
	resp, err := http.Get(url)
	b = nil
	if err == nil {
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil || len(b) != 100 {
		t.Errorf("drop: %d bytes, %v", len(b), err)
	}
	s.Hub.FaultResolve("dataset", "org/d", "x.bin", 503, 1)
	if r := do(t, "HEAD", s.URL+"/datasets/org/d/resolve/main/x.bin"); r.StatusCode != 503 {
		t.Errorf("resolve fault: %d", r.StatusCode)
	}
	if r := do(t, "HEAD", s.URL+"/datasets/org/d/resolve/main/x.bin"); r.StatusCode != 302 {
		t.Errorf("after resolve fault: %d", r.StatusCode)
	}
}

func TestAddDir(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "w.bin"), make([]byte, 4096), 0o644)
	s := start(t, Options{})
	commit, err := s.Hub.AddDir("space", "org/s", dir, 1024, "main")
	if err != nil {
		t.Fatal(err)
	}
	if r := do(t, "HEAD", s.URL+"/spaces/org/s/resolve/main/sub/w.bin"); r.StatusCode != 302 || r.Header.Get("X-Repo-Commit") != commit {
		t.Errorf("large file from a directory: %d %v", r.StatusCode, r.Header)
	}
	if r := do(t, "HEAD", s.URL+"/spaces/org/s/resolve/main/config.json"); r.StatusCode != 200 {
		t.Errorf("small file from a directory: %d", r.StatusCode)
	}
}

func TestResolveCacheRedirect(t *testing.T) {
	s := start(t, Options{ResolveCache: true})
	commit, _ := s.Hub.Commit("model", "m", map[string]File{"d/a.txt": {Content: Bytes([]byte("abc"))}}, "main")
	r := do(t, "HEAD", s.URL+"/m/resolve/main/d/a.txt")
	loc := r.Header.Get("Location")
	if r.StatusCode != 307 || loc != "/api/resolve-cache/models/m/"+commit+"/d/a.txt" {
		t.Fatalf("resolve: %d %q", r.StatusCode, loc)
	}
	r = do(t, "GET", s.URL+loc)
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || string(b) != "abc" || r.Header.Get("X-Repo-Commit") != commit || r.Header.Get("ETag") == "" {
		t.Fatalf("resolve-cache: %d %q %v", r.StatusCode, b, r.Header)
	}
}
