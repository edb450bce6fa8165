// Package examples holds the Python handlers volboot ships as examples; this
// file tests them with the machine's real python3.
package examples

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/runtime/notify"
)

func TestHandlersCompile(t *testing.T) {
	for _, f := range []string{"demo_handler.py", "runpod_handler.py"} {
		cmd := exec.Command("python3", "-m", "py_compile", f)
		// Keep __pycache__ out of the source tree.
		cmd.Env = append(os.Environ(), "PYTHONPYCACHEPREFIX="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("py_compile %s: %v\n%s", f, err, out)
		}
	}
}

// fakeHubCache lays out one model file the way huggingface_hub does:
// blobs/<sha256>, snapshots/<commit>/<file> as a relative link to it,
// refs/main holding the commit.
func fakeHubCache(t *testing.T, repo, file string, content []byte) string {
	t.Helper()
	cache := t.TempDir()
	repoDir := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	sum := sha256.Sum256(content)
	blob := hex.EncodeToString(sum[:])
	commit := strings.Repeat("ab", 20)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(repoDir, "blobs"), 0o755))
	must(os.WriteFile(filepath.Join(repoDir, "blobs", blob), content, 0o644))
	snap := filepath.Join(repoDir, "snapshots", commit, filepath.Dir(file))
	must(os.MkdirAll(snap, 0o755))
	rel, err := filepath.Rel(snap, filepath.Join(repoDir, "blobs", blob))
	must(err)
	must(os.Symlink(rel, filepath.Join(snap, filepath.Base(file))))
	must(os.MkdirAll(filepath.Join(repoDir, "refs"), 0o755))
	must(os.WriteFile(filepath.Join(repoDir, "refs", "main"), []byte(commit), 0o644))
	return cache
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// The demo handler warm-loads from the hub layout, signals READY=1 on an
// abstract-namespace socket, answers POST /run from the loaded bytes and
// exits 0 on SIGTERM after STOPPING=1.
func TestDemoHandlerServesAndStops(t *testing.T) {
	model := make([]byte, 1<<20)
	if _, err := rand.Read(model); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(model)
	cache := fakeHubCache(t, "volboot/tts-demo", "weights/model.bin", model)

	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	abstract := "@volboot-demo-test-" + hex.EncodeToString(rnd[:])
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: abstract, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan notify.Message, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- notify.Parse(buf[:n])
		}
	}()

	caps := filepath.Join(t.TempDir(), "capabilities.json")
	if err := os.WriteFile(caps, []byte(`{"generation":"gen123","groups":["tts"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	var out bytes.Buffer
	cmd := exec.Command("python3", "demo_handler.py")
	cmd.Env = append(os.Environ(),
		"HF_HUB_CACHE="+cache,
		"DEMO_MODEL_FILE=weights/model.bin",
		fmt.Sprintf("DEMO_PORT=%d", port),
		"NOTIFY_SOCKET="+abstract,
		"VOLBOOT_GROUPS=tts,asr",
		"VOLBOOT_CAPABILITIES="+caps,
		"PYTHONPYCACHEPREFIX="+t.TempDir(),
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("handler output:\n%s", out.String())
		}
	}()

	waitFor := func(what string, ok func(notify.Message) bool) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case m, open := <-msgs:
				if !open {
					t.Fatalf("notify socket closed before %s", what)
				}
				if ok(m) {
					return
				}
			case err := <-done:
				t.Fatalf("handler exited (%v) before %s", err, what)
			case <-deadline:
				t.Fatalf("no %s within 20s", what)
			}
		}
	}
	waitFor("READY=1", func(m notify.Message) bool { return m.Ready })

	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/run", port), "application/json", strings.NewReader(`{"input":{"name":"Ada"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Output struct {
			Greeting    string   `json:"greeting"`
			ModelSHA256 string   `json:"model_sha256"`
			ModelBytes  int      `json:"model_bytes"`
			Groups      []string `json:"groups"`
			Generation  string   `json:"generation"`
		} `json:"output"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /run: %d %v", resp.StatusCode, err)
	}
	o := body.Output
	if o.ModelSHA256 != hex.EncodeToString(sum[:]) || o.ModelBytes != len(model) {
		t.Errorf("model %s (%d bytes), want %x (%d)", o.ModelSHA256, o.ModelBytes, sum, len(model))
	}
	if !strings.HasPrefix(o.Greeting, "hello, Ada") || o.Generation != "gen123" || strings.Join(o.Groups, ",") != "tts,asr" {
		t.Errorf("output %+v", o)
	}

	resp, err = http.Post(fmt.Sprintf("http://127.0.0.1:%d/run", port), "application/json", strings.NewReader(`[1,2]`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("bad request answered %d, want 400", resp.StatusCode)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor("STOPPING=1", func(m notify.Message) bool { return m.Stopping })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler did not exit within 10s of SIGTERM")
	}
	if !strings.HasPrefix(out.String(), "demo_handler: starting\n") {
		t.Errorf("first output line %q", strings.SplitN(out.String(), "\n", 2)[0])
	}
}

func TestDemoHandlerMissingModel(t *testing.T) {
	cmd := exec.Command("python3", "demo_handler.py")
	cmd.Env = append(os.Environ(), "HF_HUB_CACHE="+t.TempDir(), "PYTHONPYCACHEPREFIX="+t.TempDir(), "NOTIFY_SOCKET=")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "volboot sync") || !strings.Contains(string(out), "refs/main") {
		t.Errorf("error does not name the missing ref and the fix:\n%s", out)
	}
}
