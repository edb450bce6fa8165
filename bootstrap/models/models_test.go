package models

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/integration/fakehub"
)

func TestMain(m *testing.M) {
	if os.Getenv("VOLBOOT_MODELS_HELPER") == "sync" {
		os.Exit(helperSync())
	}
	os.Exit(m.Run())
}

// helperSync is the child process of TestResumeAfterKill: one Sync of the
// model described by the environment.
func helperSync() int {
	s, err := newSyncer(os.Getenv("HELPER_ENDPOINT"), os.Getenv("HELPER_HUBDIR"), "", zap.NewNop())
	if err != nil {
		return 2
	}
	res := s.Sync(context.Background(), []Model{{Repo: os.Getenv("HELPER_REPO"), Files: strings.Split(os.Getenv("HELPER_FILES"), ",")}})
	if res[0].Err != nil {
		os.Stderr.WriteString(res[0].Err.Error() + "\n")
		return 1
	}
	return 0
}

func fastSleep(ctx context.Context, d time.Duration) error { return ctx.Err() }

func newSyncer(endpoint, hubDir, token string, log *zap.Logger) (*Syncer, error) {
	env := map[string]string{"HF_TOKEN": token}
	creds, err := fetch.LoadCredentials(fetch.CredentialSources{
		Getenv:    func(k string) string { return env[k] },
		NetrcPath: filepath.Join(hubDir, "no-netrc"),
		HFHost:    "127.0.0.1",
	})
	if err != nil {
		return nil, err
	}
	f := fetch.New(fetch.Options{Credentials: creds, Logger: log, Sleep: fastSleep, MaxAttempts: 3,
		Progress: fetch.ProgressOptions{LogInterval: -1}})
	return New(Options{Endpoint: endpoint, HubDir: hubDir, Fetcher: f, Credentials: creds, Logger: log, Sleep: fastSleep, MaxAttempts: 3})
}

type env struct {
	t   *testing.T
	hub *fakehub.Hub
	srv *fakehub.Servers
	dir string
	log *observer.ObservedLogs
}

func newEnv(t *testing.T, opt fakehub.Options) *env {
	t.Helper()
	hub := fakehub.New(opt)
	srv, err := fakehub.Start(hub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	core, logs := observer.New(zap.DebugLevel)
	_ = core
	return &env{t: t, hub: hub, srv: srv, dir: filepath.Join(t.TempDir(), "models", "hub"), log: logs}
}

func (e *env) syncer(token string) *Syncer {
	e.t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	e.log = logs
	s, err := newSyncer(e.srv.URL, e.dir, token, zap.New(core))
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) sync(token string, ms ...Model) []Result {
	e.t.Helper()
	return e.syncer(token).Sync(context.Background(), ms)
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

type lookup struct {
	Status string `json:"status"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Blob   string `json:"blob"`
	Commit string `json:"commit"`
}

// pyLookup runs testdata/hf_lookup.py with the machine's python3.
func pyLookup(t *testing.T, cache, typ, repo, rev, path string) lookup {
	t.Helper()
	out, err := exec.Command("python3", "testdata/hf_lookup.py", cache, typ, repo, rev, path).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("hf_lookup.py %s %s %s: %v\n%s", repo, rev, path, err, msg)
	}
	var l lookup
	if err := json.Unmarshal(out, &l); err != nil {
		t.Fatalf("hf_lookup.py output %q: %v", out, err)
	}
	return l
}

func mustOK(t *testing.T, rs []Result) {
	t.Helper()
	for _, r := range rs {
		if r.Err != nil {
			t.Fatalf("%s@%s: %v", r.Model.Repo, r.Model.Revision, r.Err)
		}
	}
}

func TestLayoutReadByPythonLookup(t *testing.T) {
	e := newEnv(t, fakehub.Options{WeakETags: true})
	files := map[string][]byte{
		"config.json":               []byte(`{"hidden": 8}`),
		"weights/model.safetensors": randBytes(3<<20+17, 1),
		"sub/dir/tok.txt":           []byte("a b c\n"),
	}
	hf := map[string]fakehub.File{}
	for p, b := range files {
		hf[p] = fakehub.File{Content: fakehub.Bytes(b), LFS: strings.HasSuffix(p, ".safetensors")}
	}
	commit, err := e.hub.Commit("model", "org/tts", hf, "main", "v1.0")
	if err != nil {
		t.Fatal(err)
	}
	dcommit, err := e.hub.Commit("dataset", "org/voices", map[string]fakehub.File{"data/a.txt": {Content: fakehub.Bytes([]byte("voice"))}}, "main")
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{"config.json", "weights/model.safetensors", "sub/dir/tok.txt"}
	rs := e.sync("",
		Model{Repo: "org/tts", Revision: "main", Files: paths},
		Model{Repo: "org/voices", RepoType: "dataset", Files: []string{"data/a.txt"}})
	mustOK(t, rs)
	if rs[0].Snapshot.Commit != commit || rs[0].Downloaded != 3 || rs[1].Snapshot.Commit != dcommit {
		t.Fatalf("results: %+v", rs)
	}
	if st := e.hub.Stats(); st.CDNWithAuth != 0 || st.CDNRequests != 1 {
		t.Fatalf("hub stats %+v: want one CDN request (the LFS file)", st)
	}

	// What huggingface_hub would find, by branch, by tag-less commit.
	for _, rev := range []string{"main", commit} {
		for _, p := range paths {
			l := pyLookup(t, e.dir, "model", "org/tts", rev, p)
			etag, _ := e.hub.ETag("model", "org/tts", commit, p)
			if l.Status != "found" || l.SHA256 != sha(files[p]) || l.Blob != etag || l.Commit != commit {
				t.Errorf("lookup %s@%s = %+v, want sha %s blob %s", p, rev, l, sha(files[p]), etag)
			}
		}
	}
	if l := pyLookup(t, e.dir, "dataset", "org/voices", "main", "data/a.txt"); l.Status != "found" || l.SHA256 != sha([]byte("voice")) {
		t.Errorf("dataset lookup = %+v", l)
	}
	repoDir := filepath.Join(e.dir, "models--org--tts")
	if b, _ := os.ReadFile(filepath.Join(repoDir, "refs", "main")); string(b) != commit {
		t.Errorf("refs/main = %q, want %q", b, commit)
	}
	if tgt, _ := os.Readlink(filepath.Join(repoDir, "snapshots", commit, "sub", "dir", "tok.txt")); !strings.HasPrefix(tgt, "../../../../blobs/") {
		t.Errorf("nested link target %q", tgt)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "datasets--org--voices", "refs", "main")); err != nil {
		t.Errorf("dataset ref: %v", err)
	}

	// By commit: no ref is written for it, nothing is downloaded and,
	// since the snapshot is complete, the hub is not even asked.
	before := e.hub.Stats()
	rs = e.sync("", Model{Repo: "org/tts", Revision: commit, Files: paths})
	mustOK(t, rs)
	if !rs[0].Offline || rs[0].Downloaded != 0 || e.hub.Stats() != before {
		t.Errorf("commit revision of a complete snapshot: offline=%v downloaded=%d, stats %+v -> %+v", rs[0].Offline, rs[0].Downloaded, before, e.hub.Stats())
	}
	if _, err := os.Stat(filepath.Join(repoDir, "refs", commit)); err == nil {
		t.Error("refs/<commit> written")
	}
	// By branch again: metadata only, no blob downloaded.
	rs = e.sync("", Model{Repo: "org/tts", Revision: "v1.0", Files: paths})
	mustOK(t, rs)
	if rs[0].Downloaded != 0 || e.hub.Stats().CDNRequests != 1 {
		t.Errorf("second sync downloaded %d, CDN requests %d", rs[0].Downloaded, e.hub.Stats().CDNRequests)
	}

	// Status, with and without the recorded snapshot.
	m := Model{Repo: "org/tts", Revision: "main", Files: paths}
	if st := Check(e.dir, m, &rs[0].Snapshot); !st.Complete || st.Commit != commit {
		t.Errorf("Check with record = %+v", st)
	}
	// A record of the commit only (what the reconciler's state keeps) still
	// checks the files, and notices when the branch moved on disk.
	if st := Check(e.dir, m, &Snapshot{Commit: commit}); !st.Complete {
		t.Errorf("Check with commit-only record = %+v", st)
	}
	if st := Check(e.dir, m, &Snapshot{Commit: strings.Repeat("0", 40)}); st.Complete || !strings.Contains(st.Problems[0], "was recorded") {
		t.Errorf("Check with another commit = %+v", st)
	}
	os.Remove(filepath.Join(repoDir, "snapshots", commit, "config.json"))
	if st := Check(e.dir, m, &Snapshot{Commit: commit}); st.Complete || !strings.Contains(st.Problems[0], "config.json: not in the snapshot") {
		t.Errorf("Check after removing a link = %+v", st)
	}
	mustOK(t, e.sync("", m))
	if st := Check(e.dir, Model{Repo: "org/tts", Files: []string{"**/*.txt", "*.json"}}, nil); !st.Complete {
		t.Errorf("Check with patterns = %+v", st)
	}

	// Relocatable: the same tree read at another path.
	moved := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Rename(e.dir, moved); err != nil {
		t.Fatal(err)
	}
	if l := pyLookup(t, moved, "model", "org/tts", "main", "weights/model.safetensors"); l.Status != "found" || l.SHA256 != sha(files["weights/model.safetensors"]) {
		t.Errorf("after move: %+v", l)
	}
}

func TestSecondRevisionSharesBlobs(t *testing.T) {
	e := newEnv(t, fakehub.Options{ResolveCache: true})
	a, b1, b2 := randBytes(1<<20, 2), randBytes(1<<20, 3), randBytes(1<<20, 4)
	cfg := fakehub.File{Content: fakehub.Bytes([]byte(`{}`))}
	c1, _ := e.hub.Commit("model", "org/m", map[string]fakehub.File{"a.bin": {Content: fakehub.Bytes(a), LFS: true}, "b.bin": {Content: fakehub.Bytes(b1), LFS: true}, "config.json": cfg}, "main", "v1")
	files := []string{"a.bin", "b.bin", "config.json"}
	mustOK(t, e.sync("", Model{Repo: "org/m", Revision: "main", Files: files}))
	c2, _ := e.hub.Commit("model", "org/m", map[string]fakehub.File{"a.bin": {Content: fakehub.Bytes(a), LFS: true}, "b.bin": {Content: fakehub.Bytes(b2), LFS: true}, "config.json": cfg}, "main")
	before := e.hub.Stats()
	rs := e.sync("", Model{Repo: "org/m", Revision: "main", Files: files}, Model{Repo: "org/m", Revision: "v1", Files: files})
	mustOK(t, rs)
	after := e.hub.Stats()
	if rs[0].Snapshot.Commit != c2 || rs[1].Snapshot.Commit != c1 {
		t.Fatalf("commits %s %s, want %s %s", rs[0].Snapshot.Commit, rs[1].Snapshot.Commit, c2, c1)
	}
	if got := after.CDNRequests - before.CDNRequests; got != 1 || rs[0].Downloaded != 1 || rs[1].Downloaded != 0 {
		t.Errorf("second revision: %d CDN requests, downloaded %d and %d; want only b.bin's new blob", got, rs[0].Downloaded, rs[1].Downloaded)
	}
	if st := e.hub.BlobStats(sha(a)); st.Requests != 1 {
		t.Errorf("shared blob requested %d times", st.Requests)
	}
	repoDir := filepath.Join(e.dir, "models--org--m")
	blobs, _ := os.ReadDir(filepath.Join(repoDir, "blobs"))
	if len(blobs) != 4 {
		t.Errorf("blobs: %v, want a, b1, b2, config", blobs)
	}
	for _, c := range []string{c1, c2} {
		if tgt, _ := os.Readlink(filepath.Join(repoDir, "snapshots", c, "a.bin")); tgt != "../../blobs/"+sha(a) {
			t.Errorf("snapshot %s a.bin -> %q", c, tgt)
		}
	}
	for rev, want := range map[string][]byte{"main": b2, "v1": b1, c1: b1} {
		if l := pyLookup(t, e.dir, "model", "org/m", rev, "b.bin"); l.SHA256 != sha(want) {
			t.Errorf("b.bin@%s = %+v", rev, l)
		}
	}

	// Both revisions into an empty cache in one Sync: the shared blob is
	// one download.
	e2 := filepath.Join(t.TempDir(), "hub")
	s2, err := newSyncer(e.srv.URL, e2, "", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	aReqs := e.hub.BlobStats(sha(a)).Requests
	rs2 := s2.Sync(context.Background(), []Model{{Repo: "org/m", Revision: "main", Files: files}, {Repo: "org/m", Revision: "v1", Files: files}})
	mustOK(t, rs2)
	if got := e.hub.BlobStats(sha(a)).Requests - aReqs; got != 1 || rs2[0].Downloaded != 3 || rs2[1].Downloaded != 1 {
		t.Errorf("one Sync of two revisions: shared blob fetched %d times, downloaded %d and %d", got, rs2[0].Downloaded, rs2[1].Downloaded)
	}

	// A writer that died between symlink and rename left a temporary name.
	leftover := atomicfile.TempName(filepath.Join(repoDir, "snapshots", c2, "a.bin"))
	if err := os.Symlink("../../blobs/"+sha(a), leftover); err != nil {
		t.Fatal(err)
	}

	// gc keeping only the new commit: dry run first.
	keep := []Keep{{Repo: "org/m", Commits: []string{c2}}}
	rep, err := GC(e.dir, keep, true)
	if err != nil || len(rep.Blobs) != 1 || filepath.Base(rep.Blobs[0]) != sha(b1) || len(rep.Snapshots) != 1 || len(rep.Refs) != 1 {
		t.Fatalf("dry gc = %+v, %v", rep, err)
	}
	if _, err := os.Stat(rep.Blobs[0]); err != nil {
		t.Fatalf("dry run removed %s", rep.Blobs[0])
	}
	if rep, err = GC(e.dir, keep, false); err != nil || len(rep.Leftovers) != 1 || rep.Leftovers[0] != leftover {
		t.Fatalf("gc = %+v, %v", rep, err)
	}
	if _, err := os.Lstat(leftover); err == nil {
		t.Error("temporary name kept")
	}
	if _, err := os.Stat(filepath.Join(repoDir, "blobs", sha(b1))); err == nil {
		t.Error("unused blob kept")
	}
	if _, err := os.Stat(filepath.Join(repoDir, "refs", "v1")); err == nil {
		t.Error("ref to a dropped commit kept")
	}
	if st := Check(e.dir, Model{Repo: "org/m", Revision: "main", Files: files}, &rs[0].Snapshot); !st.Complete {
		t.Errorf("after gc: %+v", st)
	}
	if st := Check(e.dir, Model{Repo: "org/m", Revision: "v1", Files: files}, nil); st.Complete || !strings.Contains(st.Problems[0], "refs/v1") {
		t.Errorf("dropped revision: %+v", st)
	}
}

func TestTokenStaysOnHubHost(t *testing.T) {
	e := newEnv(t, fakehub.Options{ResolveCache: true})
	const token = "hf_SECRETsecret1234"
	w := randBytes(2<<20, 5)
	if _, err := e.hub.Commit("model", "org/private", map[string]fakehub.File{"w.bin": {Content: fakehub.Bytes(w), LFS: true}, "c.json": {Content: fakehub.Bytes([]byte("{}"))}}, "main"); err != nil {
		t.Fatal(err)
	}
	e.hub.RequireToken("model", "org/private", token)
	m := Model{Repo: "org/private", Files: []string{"w.bin", "c.json"}}

	rs := e.sync("", m)
	var me *Error
	if !errors.As(rs[0].Err, &me) || me.Kind != Unauthorized || !me.NoToken ||
		!strings.Contains(me.Error(), "HF_TOKEN missing or lacks access to org/private") || !strings.Contains(me.Error(), "HF_TOKEN is not set") {
		t.Fatalf("without token: %v", rs[0].Err)
	}
	rs = e.sync("hf_wrong", m)
	if !errors.As(rs[0].Err, &me) || me.Kind != Unauthorized || me.NoToken {
		t.Fatalf("wrong token: %v", rs[0].Err)
	}

	// A renamed private repository: the relative redirect keeps the token,
	// the CDN never gets it.
	if err := e.hub.Rename("model", "org/private", "org/private-v2"); err != nil {
		t.Fatal(err)
	}
	rs = e.sync(token, m)
	mustOK(t, rs)
	st := e.hub.Stats()
	if st.CDNRequests == 0 || st.CDNWithAuth != 0 {
		t.Fatalf("CDN requests %d, with Authorization %d", st.CDNRequests, st.CDNWithAuth)
	}
	if l := pyLookup(t, e.dir, "model", "org/private", "main", "w.bin"); l.SHA256 != sha(w) {
		t.Errorf("lookup: %+v", l)
	}
	for _, ent := range e.log.All() {
		b, _ := json.Marshal(ent.ContextMap())
		if strings.Contains(ent.Message+string(b), "SECRET") {
			t.Errorf("token logged: %s %s", ent.Message, b)
		}
	}
	if strings.Contains(me.Error(), "hf_wrong") {
		t.Errorf("token in error: %v", me)
	}
}

func TestNotFoundReported(t *testing.T) {
	e := newEnv(t, fakehub.Options{})
	commit, _ := e.hub.Commit("model", "org/m", map[string]fakehub.File{"a.json": {Content: fakehub.Bytes([]byte("{}"))}}, "main")
	cases := []struct {
		name  string
		token string
		m     Model
		kind  ErrorKind
		want  []string
	}{
		{"repo", "tok", Model{Repo: "org/nope", Revision: "v2", Files: []string{"a.json"}}, RepoNotFound, []string{"repository org/nope not found", "revision v2"}},
		{"repo hidden without token", "", Model{Repo: "org/nope", Files: []string{"a.json"}}, Unauthorized, []string{"HF_TOKEN missing or lacks access to org/nope", "does not exist"}},
		{"revision", "", Model{Repo: "org/m", Revision: "dev", Files: []string{"a.json"}}, RevisionNotFound, []string{"revision dev not found in org/m"}},
		{"commit", "", Model{Repo: "org/m", Revision: strings.Repeat("ab", 20), Files: []string{"a.json"}}, RevisionNotFound, []string{"revision abab"}},
		{"pattern", "", Model{Repo: "org/m", Files: []string{"*.safetensors"}}, EntryNotFound, []string{"*.safetensors not found in org/m", "matches no file"}},
		{"bad path", "", Model{Repo: "org/m", Files: []string{"../x"}}, Invalid, []string{`"../x"`}},
	}
	for _, c := range cases {
		rs := e.sync(c.token, c.m)
		var me *Error
		if !errors.As(rs[0].Err, &me) || me.Kind != c.kind {
			t.Errorf("%s: err %v, want kind %d", c.name, rs[0].Err, c.kind)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(me.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, me.Error(), w)
			}
		}
	}

	// A missing file at a known commit: the rest is fetched, the absence
	// is recorded where huggingface_hub looks for it, the error names it.
	rs := e.sync("", Model{Repo: "org/m", Files: []string{"a.json", "extra/missing.bin"}})
	var me *Error
	if !errors.As(rs[0].Err, &me) || me.Kind != EntryNotFound || !strings.Contains(me.Error(), "extra/missing.bin not found in org/m at revision main") {
		t.Fatalf("missing file: %v", rs[0].Err)
	}
	if len(rs[0].Missing) != 1 || len(rs[0].Snapshot.Files) != 1 {
		t.Errorf("result %+v", rs[0])
	}
	if l := pyLookup(t, e.dir, "model", "org/m", "main", "extra/missing.bin"); l.Status != "no_exist" || l.Commit != commit {
		t.Errorf("missing lookup = %+v", l)
	}
	if l := pyLookup(t, e.dir, "model", "org/m", "main", "a.json"); l.Status != "found" {
		t.Errorf("present lookup = %+v", l)
	}
	if st := Check(e.dir, Model{Repo: "org/m", Files: []string{"a.json", "extra/missing.bin"}}, nil); st.Complete || len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "extra/missing.bin") {
		t.Errorf("Check = %+v", st)
	}
}

func TestCorruptLFSRefused(t *testing.T) {
	e := newEnv(t, fakehub.Options{})
	w := randBytes(1<<20, 6)
	e.hub.Commit("model", "org/m", map[string]fakehub.File{"w.bin": {Content: fakehub.Bytes(w), LFS: true}}, "main")
	if err := e.hub.FaultBlob(sha(w), fakehub.Fault{Corrupt: true, CorruptAt: 12345}); err != nil {
		t.Fatal(err)
	}
	rs := e.sync("", Model{Repo: "org/m", Files: []string{"w.bin"}})
	var me *Error
	var de *fetch.DigestError
	if !errors.As(rs[0].Err, &me) || me.Kind != Download || !errors.As(rs[0].Err, &de) || !strings.Contains(me.Error(), "w.bin") {
		t.Fatalf("corrupt blob: %v", rs[0].Err)
	}
	repoDir := filepath.Join(e.dir, "models--org--m")
	if ents, _ := os.ReadDir(filepath.Join(repoDir, "blobs")); len(ents) != 0 {
		t.Errorf("blobs/ holds %v", ents)
	}
	for _, d := range []string{"snapshots", "refs"} {
		if _, err := os.Stat(filepath.Join(repoDir, d)); err == nil {
			t.Errorf("%s/ exists after a refused download", d)
		}
	}
	// Once the CDN behaves, the same call succeeds.
	e.hub.FaultBlob(sha(w), fakehub.Fault{})
	mustOK(t, e.sync("", Model{Repo: "org/m", Files: []string{"w.bin"}}))
}

func TestRetriesAndPatterns(t *testing.T) {
	e := newEnv(t, fakehub.Options{})
	commit, _ := e.hub.Commit("model", "org/m", map[string]fakehub.File{
		"config.json":     {Content: fakehub.Bytes([]byte("{}"))},
		"tokenizer.json":  {Content: fakehub.Bytes([]byte("[]"))},
		"onnx/model.onnx": {Content: fakehub.Bytes(randBytes(5000, 7)), LFS: true},
		"onnx/sub/x.onnx": {Content: fakehub.Bytes(randBytes(5000, 8)), LFS: true},
		"README.md":       {Content: fakehub.Bytes([]byte("# m"))},
	}, "main")
	e.hub.FaultResolve("model", "org/m", "config.json", 503, 2)
	rs := e.sync("", Model{Repo: "org/m", Files: []string{"*.json", "onnx/**"}})
	mustOK(t, rs)
	var got []string
	for _, f := range rs[0].Snapshot.Files {
		got = append(got, f.Path)
	}
	if strings.Join(got, ",") != "config.json,tokenizer.json,onnx/model.onnx,onnx/sub/x.onnx" {
		t.Errorf("expanded to %v", got)
	}
	if st := e.hub.Stats(); st.API != 1 {
		t.Errorf("API requests %d", st.API)
	}
	if l := pyLookup(t, e.dir, "model", "org/m", commit, "onnx/sub/x.onnx"); l.Status != "found" {
		t.Errorf("lookup %+v", l)
	}
	if l := pyLookup(t, e.dir, "model", "org/m", "main", "README.md"); l.Status != "absent" {
		t.Errorf("README fetched: %+v", l)
	}
	// Check finds a blob that went missing and a truncated one.
	repoDir := filepath.Join(e.dir, "models--org--m")
	os.Remove(filepath.Join(repoDir, "blobs", rs[0].Snapshot.Files[2].ETag))
	os.Truncate(filepath.Join(repoDir, "blobs", rs[0].Snapshot.Files[3].ETag), 10)
	st := Check(e.dir, Model{Repo: "org/m", Files: []string{"*.json", "onnx/**"}}, &rs[0].Snapshot)
	if st.Complete || len(st.Problems) != 2 || !strings.Contains(st.Problems[0], "onnx/model.onnx: blob") || !strings.Contains(st.Problems[1], "has 10 bytes, expected 5000") {
		t.Errorf("Check = %+v", st)
	}
	// repair: a sync puts both back.
	rs = e.sync("", Model{Repo: "org/m", Files: []string{"*.json", "onnx/**"}})
	mustOK(t, rs)
	if st := Check(e.dir, Model{Repo: "org/m", Files: []string{"*.json", "onnx/**"}}, &rs[0].Snapshot); !st.Complete {
		t.Errorf("after repair: %+v", st)
	}
}

// TestResumeAfterKill kills a downloading process with SIGKILL midway and
// checks that the next Sync resumes from the part file instead of starting
// over, and that nothing half-written ever had a final name.
func TestResumeAfterKill(t *testing.T) {
	e := newEnv(t, fakehub.Options{})
	const size, stallAt = 12 << 20, 5<<20 + 4096 // above fetch's ResumeMinSize (8 MiB)
	w := randBytes(size, 9)
	e.hub.Commit("model", "org/big", map[string]fakehub.File{"w.bin": {Content: fakehub.Bytes(w), LFS: true}}, "main")
	e.hub.FaultBlob(sha(w), fakehub.Fault{StallAt: stallAt})

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "VOLBOOT_MODELS_HELPER=sync", "HELPER_ENDPOINT="+e.srv.URL, "HELPER_HUBDIR="+e.dir,
		"HELPER_REPO=org/big", "HELPER_FILES=w.bin")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(e.dir, "models--org--big", "blobs", sha(w)+".part")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if fi, err := os.Stat(part); err == nil && fi.Size() == stallAt {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("part file never reached %d bytes; helper: %s", stallAt, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(e.dir, "models--org--big", "blobs", sha(w))); err == nil {
		t.Fatal("blob has its final name after the kill")
	}
	if l := pyLookup(t, e.dir, "model", "org/big", "main", "w.bin"); l.Status != "absent" {
		t.Fatalf("after kill: %+v", l)
	}

	e.hub.FaultBlob(sha(w), fakehub.Fault{})
	sent := e.hub.BlobStats(sha(w)).Bytes
	mustOK(t, e.sync("", Model{Repo: "org/big", Files: []string{"w.bin"}}))
	if got := e.hub.BlobStats(sha(w)).Bytes - sent; got != size-stallAt {
		t.Errorf("resume fetched %d bytes, want the remaining %d", got, size-stallAt)
		for _, ent := range e.log.All() {
			t.Logf("log: %s %v", ent.Message, ent.ContextMap())
		}
	}
	if l := pyLookup(t, e.dir, "model", "org/big", "main", "w.bin"); l.Status != "found" || l.SHA256 != sha(w) {
		t.Errorf("after resume: %+v", l)
	}
	if _, err := os.Stat(part); err == nil {
		t.Error("part file left behind")
	}
}

func TestPullRequestRevisionAndEndpointPolicy(t *testing.T) {
	e := newEnv(t, fakehub.Options{})
	c1, _ := e.hub.Commit("model", "org/m", map[string]fakehub.File{"a.txt": {Content: fakehub.Bytes([]byte("one"))}}, "main")
	c2, _ := e.hub.Commit("model", "org/m", map[string]fakehub.File{"a.txt": {Content: fakehub.Bytes([]byte("two"))}}, "refs/pr/1")
	rs := e.sync("", Model{Repo: "org/m", Revision: "refs/pr/1", Files: []string{"a.txt"}}, Model{Repo: "org/m", Files: []string{"a.txt"}})
	mustOK(t, rs)
	if rs[0].Snapshot.Commit != c2 || rs[1].Snapshot.Commit != c1 {
		t.Fatalf("commits %s %s", rs[0].Snapshot.Commit, rs[1].Snapshot.Commit)
	}
	if l := pyLookup(t, e.dir, "model", "org/m", "refs/pr/1", "a.txt"); l.SHA256 != sha([]byte("two")) {
		t.Errorf("refs/pr/1 lookup: %+v", l)
	}

	f := fetch.New(fetch.Options{})
	for _, ep := range []string{"http://hub.example.com", "ftp://x", "https://", "https://hub.example.com?x=1"} {
		if _, err := New(Options{Endpoint: ep, HubDir: t.TempDir(), Fetcher: f}); err == nil {
			t.Errorf("endpoint %q accepted", ep)
		}
	}
	if _, err := New(Options{Endpoint: "http://hub.example.com", HubDir: t.TempDir(), Fetcher: f, AllowHTTP: []string{"hub.example.com"}}); err != nil {
		t.Errorf("allowed http endpoint: %v", err)
	}
	if got := EndpointFromEnv(func(string) string { return "" }); got != DefaultEndpoint {
		t.Error(got)
	}
	if got := EndpointFromEnv(func(string) string { return "https://mirror.example/hf/ " }); got != "https://mirror.example/hf" {
		t.Error(got)
	}
}

func TestVerifyFindsChangedBlobs(t *testing.T) {
	e := newEnv(t, fakehub.Options{})
	w := randBytes(100000, 11)
	e.hub.Commit("model", "org/m", map[string]fakehub.File{"w.bin": {Content: fakehub.Bytes(w), LFS: true}, "c.json": {Content: fakehub.Bytes([]byte(`{"a":1}`))}}, "main")
	m := Model{Repo: "org/m", Files: []string{"w.bin", "c.json"}}
	rs := e.sync("", m)
	mustOK(t, rs)
	if st := Verify(e.dir, m, &rs[0].Snapshot); !st.Complete || len(st.BadBlobs) != 0 {
		t.Fatalf("Verify of a fresh sync = %+v", st)
	}
	for _, f := range rs[0].Snapshot.Files {
		p := filepath.Join(e.dir, "models--org--m", "blobs", f.ETag)
		b, _ := os.ReadFile(p)
		b[len(b)/2] ^= 1
		os.WriteFile(p, b, 0o644)
	}
	if st := Check(e.dir, m, &rs[0].Snapshot); !st.Complete {
		t.Fatalf("Check (sizes only) = %+v", st)
	}
	st := Verify(e.dir, m, &rs[0].Snapshot)
	if st.Complete || len(st.BadBlobs) != 2 {
		t.Fatalf("Verify after bit flips = %+v", st)
	}
	for _, b := range st.BadBlobs {
		os.Remove(b)
	}
	mustOK(t, e.sync("", m))
	if st := Verify(e.dir, m, nil); !st.Complete {
		t.Errorf("after repair: %+v", st)
	}
}

func TestMetadataRetryAfterAndGated(t *testing.T) {
	var n int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		if n == 1 {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		if r.URL.Path == "/gated/m/resolve/main/a" {
			w.Header().Set("X-Error-Code", "GatedRepo")
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Header().Set("X-Repo-Commit", strings.Repeat("c", 40))
		w.Header().Set("ETag", `"`+strings.Repeat("e", 40)+`"`)
		w.Header().Set("Content-Length", "3")
	}))
	defer srv.Close()
	var slept []time.Duration
	s, err := New(Options{Endpoint: srv.URL, HubDir: t.TempDir(), Fetcher: fetch.New(fetch.Options{}),
		Sleep: func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	md, err := s.client.head(context.Background(), srv.URL+"/o/m/resolve/main/a")
	if err != nil || md.size != 3 || len(slept) != 1 || slept[0] != 7*time.Second {
		t.Fatalf("head = %+v, %v; slept %v", md, err, slept)
	}
	rs := s.Sync(context.Background(), []Model{{Repo: "gated/m", Files: []string{"a"}}})
	var me *Error
	if !errors.As(rs[0].Err, &me) || me.Kind != Unauthorized || !me.Gated || !strings.Contains(me.Error(), "gated") {
		t.Errorf("gated: %v", rs[0].Err)
	}
}

// TestConcurrentSyncsNeverCorrupt runs two Syncers (two workers without the
// volume lock) on one cache at once. The lock only saves work: whatever
// the race does, no final name holds unverified bytes, and a later Sync
// ends complete and correct.
func TestConcurrentSyncsNeverCorrupt(t *testing.T) {
	e := newEnv(t, fakehub.Options{})
	w := randBytes(10<<20, 12)
	e.hub.Commit("model", "org/m", map[string]fakehub.File{"w.bin": {Content: fakehub.Bytes(w), LFS: true}, "c.json": {Content: fakehub.Bytes([]byte("{}"))}}, "main")
	m := Model{Repo: "org/m", Files: []string{"w.bin", "c.json"}}
	done := make(chan []Result, 2)
	for i := 0; i < 2; i++ {
		s, err := newSyncer(e.srv.URL, e.dir, "", zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		go func() { done <- s.Sync(context.Background(), []Model{m}) }()
	}
	for i := 0; i < 2; i++ {
		if rs := <-done; rs[0].Err != nil {
			t.Logf("racing sync failed (allowed): %v", rs[0].Err)
		}
	}
	blob := filepath.Join(e.dir, "models--org--m", "blobs", sha(w))
	if b, err := os.ReadFile(blob); err == nil && sha(b) != sha(w) {
		t.Fatal("a race left wrong bytes under the blob's final name")
	}
	mustOK(t, e.sync("", m))
	if st := Verify(e.dir, m, nil); !st.Complete {
		t.Fatalf("after the race: %+v", st)
	}
	if l := pyLookup(t, e.dir, "model", "org/m", "main", "w.bin"); l.SHA256 != sha(w) {
		t.Errorf("lookup %+v", l)
	}
}

// An unreachable hub costs one line per request URL, with the attempt
// count and the last error, not one per attempt.
func TestUnreachableHubLogsOneLinePerURL(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	endpoint := srv.URL
	srv.Close() // nothing listens there now: connections are refused
	core, logs := observer.New(zap.DebugLevel)
	s, err := newSyncer(endpoint, filepath.Join(t.TempDir(), "hub"), "", zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	rs := s.Sync(context.Background(), []Model{{Repo: "org/a", Files: []string{"a.bin"}}, {Repo: "org/b", Files: []string{"b.bin"}}})
	for _, r := range rs {
		if r.Err == nil {
			t.Fatalf("%s synced from a closed port", r.Model.Repo)
		}
	}
	byURL := map[string][]observer.LoggedEntry{}
	debug := 0
	for _, e := range logs.FilterFieldKey("url").All() {
		if e.Level < zap.InfoLevel {
			debug++
			continue
		}
		u := e.ContextMap()["url"].(string)
		byURL[u] = append(byURL[u], e)
	}
	if len(byURL) != 2 {
		t.Fatalf("lines at info or above name %d URLs, want one per model: %v", len(byURL), byURL)
	}
	for u, es := range byURL {
		msg := fmt.Sprint(es[0].ContextMap()["error"])
		if len(es) != 1 || es[0].Level != zap.WarnLevel || es[0].ContextMap()["attempts"] != int64(3) ||
			!strings.Contains(msg, "3 attempts failed") || !strings.Contains(msg, "connection refused") {
			t.Errorf("%s: %+v, want one warning with 3 attempts and the last error", u, es)
		}
	}
	if debug < 4 {
		t.Errorf("%d debug lines, want one per retried attempt", debug)
	}
}
