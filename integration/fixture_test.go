package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/integration/testindex"
)

// fixture is a synthetic stack served by a local index, a manifest and lock
// describing it, a volume, and an interpreter wrapper that logs every time
// volboot starts it.
type fixture struct {
	t      *testing.T
	work   string // manifest and lock
	wheels string // the wheelhouse the index serves
	vol    string
	index  *testindex.Server
	srv    *httptest.Server
	// local is the fixture's --local-dir (VOLBOOT_LOCAL_DIR), so that no
	// test writes to the default on the machine's disk.
	local  string
	python string // wrapper around python3 that logs each start to pyLog
	pyLog  string
	env    []string
	// cred, when set, runs volboot as another user (a worker whose volume
	// is not its own).
	cred *syscall.Credential

	authMu sync.Mutex
	auth   []string // Authorization headers the index received
}

// newFixture makes an empty fixture whose volume is vol (a fresh temporary
// directory when "").
func newFixture(t *testing.T, vol string) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{t: t, work: filepath.Join(base, "work"), wheels: filepath.Join(base, "wheels"), vol: vol, local: filepath.Join(base, "local")}
	if f.vol == "" {
		f.vol = filepath.Join(base, "volume")
	}
	for _, d := range []string{f.work, f.wheels, f.vol} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	real, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 on PATH")
	}
	real, _ = filepath.EvalSymlinks(real)
	f.pyLog = filepath.Join(base, "python.log")
	f.python = filepath.Join(base, "python-wrapper")
	script := fmt.Sprintf("#!/bin/sh\necho \"$$ $*\" >> %s\nexec %s \"$@\"\n", f.pyLog, real)
	if err := os.WriteFile(f.python, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	f.index = testindex.New()
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			f.authMu.Lock()
			f.auth = append(f.auth, a)
			f.authMu.Unlock()
		}
		f.index.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		f.srv.Close()
		f.index.Close()
	})
	return f
}

// authHeaders are the Authorization headers the index has received.
func (f *fixture) authHeaders() []string {
	f.authMu.Lock()
	defer f.authMu.Unlock()
	return append([]string(nil), f.auth...)
}

// add writes the wheels of specs and serves them.
func (f *fixture) add(specs ...synthstack.Spec) []synthstack.Wheel {
	f.t.Helper()
	ws, err := synthstack.Write(f.wheels, specs, 2)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, w := range ws {
		f.serve(w)
	}
	return ws
}

// serve (re)publishes w at its URL.
func (f *fixture) serve(w synthstack.Wheel) {
	f.t.Helper()
	data, err := os.ReadFile(w.Path)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.index.AddWheel(w.Filename, testindex.Bytes(data)); err != nil {
		f.t.Fatal(err)
	}
}

// addPip serves the machine's real pip wheel (from ensurepip's bundle).
func (f *fixture) addPip() synthstack.Wheel {
	f.t.Helper()
	out, err := exec.Command("python3", "-c", "import ensurepip, os; print(os.path.join(os.path.dirname(ensurepip.__file__), '_bundled'))").Output()
	if err != nil {
		f.t.Skipf("python3 has no ensurepip: %v", err)
	}
	matches, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "pip-*.whl"))
	if len(matches) == 0 {
		f.t.Skip("python3 bundles no pip wheel")
	}
	data, err := os.ReadFile(matches[0])
	if err != nil {
		f.t.Fatal(err)
	}
	name := filepath.Base(matches[0])
	if err := os.WriteFile(filepath.Join(f.wheels, name), data, 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := f.index.AddWheel(name, testindex.Bytes(data)); err != nil {
		f.t.Fatal(err)
	}
	sha, err := f.index.SHA256(testindex.FileURLPath(name))
	if err != nil {
		f.t.Fatal(err)
	}
	_, version, _ := strings.Cut(strings.TrimSuffix(name, "-py3-none-any.whl"), "-")
	return synthstack.Wheel{Spec: synthstack.Spec{Name: "pip", Version: version}, Filename: name, Path: filepath.Join(f.wheels, name), SHA256: sha, Size: int64(len(data))}
}

// url is where the index serves w.
func (f *fixture) url(w synthstack.Wheel) string {
	return f.srv.URL + testindex.FileURLPath(w.Filename)
}

// entry is w's lock entry in group, served by the index.
func (f *fixture) entry(w synthstack.Wheel, group string) synthstack.Entry {
	return w.Entry(group, f.url(w))
}

// stats are the index's counters for w.
func (f *fixture) stats(w synthstack.Wheel) testindex.Stats {
	return f.index.Stats(testindex.FileURLPath(w.Filename))
}

// write writes the manifest and the lock.
func (f *fixture) write(groups []synthstack.Group, entries []synthstack.Entry) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.work, "volboot.toml"), synthstack.Manifest("it", "pylock.toml", groups), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.work, "pylock.toml"), synthstack.Lock(entries), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// manifest is the manifest's path.
func (f *fixture) manifest() string { return filepath.Join(f.work, "volboot.toml") }

// args puts the fixture's flags after a command.
func (f *fixture) args(cmd string, more ...string) []string {
	return append([]string{cmd, "--volume", f.vol, "--manifest", f.manifest(), "--python", f.python}, more...)
}

// runTimeout bounds every volboot process a fixture runs: a hang fails the
// test with volboot's goroutines (SIGQUIT) instead of the package timeout.
const runTimeout = 3 * time.Minute

// run runs a volboot command against the fixture.
func (f *fixture) run(cmd string, more ...string) result {
	f.t.Helper()
	c := f.command(cmd, more...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: f.cred}
	if err := c.Start(); err != nil {
		f.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(runTimeout):
		c.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		f.t.Fatalf("volboot %s hung for %s; its output and goroutines:\n%s%s", cmd, runTimeout, out.String(), errb.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		f.t.Fatalf("run volboot %s: %v", cmd, err)
	}
	return r
}

// command is a volboot process against the fixture, not started.
func (f *fixture) command(cmd string, more ...string) *exec.Cmd {
	c := exec.Command(volbootBin, f.args(cmd, more...)...)
	c.Dir = f.work
	// Test volumes are local directories on purpose (--create-volume).
	c.Env = append(append(os.Environ(), "VOLBOOT_LOG_FORMAT=json", "VOLBOOT_CREATE_VOLUME=1", "VOLBOOT_LOCAL_DIR="+f.local), f.env...)
	return c
}

// sync runs `volboot sync`, fails the test unless it exits 0, and returns
// the generation it printed.
func (f *fixture) sync() string {
	f.t.Helper()
	r := f.run("sync")
	if r.code != 0 {
		f.t.Fatalf("sync: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return generationOf(f.t, r.stdout)
}

// generationOf finds "generation <id>" in sync's output.
func generationOf(t *testing.T, stdout string) string {
	t.Helper()
	for _, line := range strings.Split(stdout, "\n") {
		if id, ok := strings.CutPrefix(line, "generation "); ok {
			return strings.TrimSpace(id)
		}
	}
	t.Fatalf("no generation line in sync's output:\n%s", stdout)
	return ""
}

// pythonStarts counts how often volboot has started the interpreter wrapper.
func (f *fixture) pythonStarts() int {
	data, err := os.ReadFile(f.pyLog)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

// statusJSON is `volboot status --json` (DESIGN.md §14).
type statusJSON struct {
	InSync     bool    `json:"in_sync"`
	Generation *string `json:"generation"`
	Groups     []struct {
		Name   string `json:"name"`
		State  string `json:"state"`
		Reason string `json:"reason"`
	} `json:"groups"`
	Drift []struct {
		Kind    string `json:"kind"`
		Package string `json:"package"`
		Detail  string `json:"detail"`
	} `json:"drift"`
	Notes []struct {
		Kind   string `json:"kind"`
		Detail string `json:"detail"`
	} `json:"notes"`
	State    string `json:"state"`
	Verified bool   `json:"verified"`
}

// group returns the named group's entry.
func (s *statusJSON) group(name string) (state, reason string) {
	for _, g := range s.Groups {
		if g.Name == name {
			return g.State, g.Reason
		}
	}
	return "", ""
}

// status runs `volboot status --json` and decodes it, checking that every
// field DESIGN.md §14 promises is present and that the exit code agrees
// with in_sync.
func (f *fixture) status(more ...string) (*statusJSON, result) {
	f.t.Helper()
	r := f.run("status", append([]string{"--json"}, more...)...)
	if r.code != 0 && r.code != 1 {
		f.t.Fatalf("status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return decodeStatus(f.t, r), r
}

func decodeStatus(t *testing.T, r result) *statusJSON {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("status --json printed no JSON object (%v):\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
	}
	for _, k := range []string{"in_sync", "state", "generation", "groups", "drift", "notes"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("status --json lacks %q:\n%s", k, r.stdout)
		}
	}
	var s statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	if s.InSync != (r.code == 0) {
		t.Fatalf("status: in_sync %v but exit %d\n%s", s.InSync, r.code, r.stdout)
	}
	return &s
}

// requirements lists the names of ws as manifest requirements.
func requirements(ws ...synthstack.Wheel) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Spec.Name+"=="+w.Spec.Version)
	}
	return out
}

// entries is the lock entries of ws, all in group.
func (f *fixture) entries(group string, ws ...synthstack.Wheel) []synthstack.Entry {
	var out []synthstack.Entry
	for _, w := range ws {
		out = append(out, f.entry(w, group))
	}
	return out
}
