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

// TestRunpodHandlerOpensPinnedModels: a manifest pins each model to a
// commit, and the hub cache volboot writes then has snapshots/<commit> but
// no refs/main. The handler must open each model at the commit volboot
// reports in VOLBOOT_CAPABILITIES (an env var overriding it), and give
// whisperx the manifest's faster-whisper snapshot directory, not a size
// name faster-whisper would look up through refs/main. huggingface_hub is
// not installed here: a stand-in with the same call answers from a cache
// laid out as volboot lays it out, refusing anything but local files.
func TestRunpodHandlerOpensPinnedModels(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "hub")
	f5, vocos, whisper := strings.Repeat("a1", 20), strings.Repeat("b2", 20), strings.Repeat("c3", 20)
	for repo, commit := range map[string]string{"SWivid/F5-TTS": f5, "charactr/vocos-mel-24khz": vocos, "Systran/faster-whisper-small": whisper} {
		snap := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"), "snapshots", commit)
		for _, f := range []string{"F5TTS_v1_Base/model_1250000.safetensors", "F5TTS_v1_Base/vocab.txt", "config.yaml", "pytorch_model.bin", "model.bin"} {
			if err := os.MkdirAll(filepath.Join(snap, filepath.Dir(f)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(snap, f), []byte(repo), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	stub := filepath.Join(dir, "stub")
	if err := os.MkdirAll(stub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stub, "huggingface_hub.py"), []byte(`import os
def hf_hub_download(repo_id, filename, revision=None, local_files_only=False):
    assert local_files_only, "the handler must not reach the hub"
    p = os.path.join(os.environ["HF_HUB_CACHE"], "models--" + repo_id.replace("/", "--"), "snapshots", revision or "main", filename)
    if not os.path.exists(p):
        raise FileNotFoundError(p)
    return p
`), 0o644); err != nil {
		t.Fatal(err)
	}
	caps := filepath.Join(dir, "capabilities.json")
	models := fmt.Sprintf(`{"generation":"g","models":[
		{"repo":"SWivid/F5-TTS","revision":"%s","commit":"%s","ok":true},
		{"repo":"charactr/vocos-mel-24khz","revision":"%s","commit":"%s","ok":true},
		{"repo":"Systran/faster-whisper-small","revision":"%s","commit":"%s","ok":true}]}`, f5, f5, vocos, vocos, whisper, whisper)
	if err := os.WriteFile(caps, []byte(models), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `import runpod_handler as h
print(h.cached(h.F5_REPO, h.F5_CKPT, h.F5_REVISION))
print(h.cached(h.VOCODER_REPO, "config.yaml", h.VOCODER_REVISION))
print(h.whisper_model())
`
	run := func(env ...string) (string, error) {
		cmd := exec.Command("python3", "-c", script)
		cmd.Env = append(os.Environ(), append([]string{"HF_HUB_CACHE=" + cache, "PYTHONPATH=" + stub + ":.", "PYTHONPYCACHEPREFIX=" + t.TempDir(),
			"VOLBOOT_CAPABILITIES=" + caps, "F5_REVISION=", "VOCOS_REVISION=", "WHISPER_MODEL=", "WHISPER_REVISION="}, env...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run()
	if err != nil {
		t.Fatalf("handler's model lookup: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"runpod_handler: starting",
		filepath.Join(cache, "models--SWivid--F5-TTS", "snapshots", f5, "F5TTS_v1_Base/model_1250000.safetensors"),
		filepath.Join(cache, "models--charactr--vocos-mel-24khz", "snapshots", vocos, "config.yaml"),
		filepath.Join(cache, "models--Systran--faster-whisper-small", "snapshots", whisper),
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("the handler opened:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	// An explicit revision wins, and a missing file says what to do.
	out, err = run("F5_REVISION=main")
	if err == nil || !strings.Contains(out, "SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors@main is not on the volume") || !strings.Contains(out, "volboot sync") {
		t.Errorf("F5_REVISION=main over a pinned cache: %v\n%s", err, out)
	}
	// A size name for whisperx passes through.
	if out, err := run("WHISPER_MODEL=large-v3"); err != nil || !strings.HasSuffix(strings.TrimSpace(out), "\nlarge-v3") {
		t.Errorf("WHISPER_MODEL=large-v3: %v\n%s", err, out)
	}
}
