package supervise_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/runtime/health"
)

// The shipped demo handler under the supervisor, as `volboot run` will run
// it on an in-sync volume: notify readiness moves /ping from 204 to 200,
// POST /run answers from the warm-loaded model, SIGTERM ends both with 0.
func TestDemoHandlerUnderSupervisor(t *testing.T) {
	t.Parallel()
	demo, err := filepath.Abs("../../examples/demo_handler.py")
	if err != nil {
		t.Fatal(err)
	}
	// A one-file hub cache: refs/main -> snapshots/<commit>/model.bin.
	cache := t.TempDir()
	repo := filepath.Join(cache, "models--volboot--tts-demo")
	commit := strings.Repeat("c0", 20)
	model := []byte("demo weights\n")
	sum := sha256.Sum256(model)
	for _, d := range []string{"refs", "snapshots/" + commit} {
		if err := os.MkdirAll(filepath.Join(repo, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(commit+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "snapshots", commit, "model.bin"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	env := []string{"HF_HUB_CACHE=" + cache, fmt.Sprintf("DEMO_PORT=%d", port), "PYTHONPYCACHEPREFIX=" + t.TempDir()}
	p := startEnv(t, env, nil, []string{"--ready", "notify", "--ready-timeout", "30s"}, "python3", demo)
	p.waitPhase(health.PhaseReady, 200, 20*time.Second)

	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/run", port), "application/json", strings.NewReader(`{"input":{"name":"volboot"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Output map[string]any `json:"output"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if body.Output["model_sha256"] != hex.EncodeToString(sum[:]) || body.Output["groups"].([]any)[0] != "demo" {
		t.Errorf("POST /run output %v", body.Output)
	}
	if s := p.status(); !strings.HasPrefix(s.Detail, "serving on port") {
		t.Errorf("handler STATUS= not in /status: %q", s.Detail)
	}
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(10 * time.Second); got != 0 {
		t.Errorf("exit code %d, want 0", got)
	}
	out := p.read(p.stdout)
	if !strings.HasPrefix(out, "demo_handler: starting\n") || !strings.Contains(out, "demo_handler: stopping") {
		t.Errorf("handler stdout:\n%s", out)
	}
}
