package supervise_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/runtime/health"
)

// supervisorBin is the test-only supervisor main, built once in TestMain
// with buildFlags.
var (
	supervisorBin string
	buildFlags    []string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "supervise-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	supervisorBin = filepath.Join(dir, "testsupervisor")
	args := append(append([]string{"build"}, buildFlags...), "-o", supervisorBin, "github.com/volboot/volboot/runtime/internal/testsupervisor")
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building testsupervisor:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running testsupervisor.
type proc struct {
	t       *testing.T
	dir     string
	cmd     *exec.Cmd
	stdout  string
	stderr  string
	addr    string
	done    chan struct{}
	waitErr error
	started time.Time
}

// start runs the supervisor with flags and the handler argv; the health
// server listens on a free port. wrap, when given, is prepended to the
// command line (e.g. unshare).
func start(t *testing.T, wrap []string, flags []string, argv ...string) *proc {
	t.Helper()
	return startEnv(t, nil, wrap, flags, argv...)
}

// startEnv is start with env added to the supervisor's (and so the
// handler's) environment.
func startEnv(t *testing.T, env []string, wrap []string, flags []string, argv ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{t: t, dir: dir, stdout: filepath.Join(dir, "stdout"), stderr: filepath.Join(dir, "stderr"), done: make(chan struct{})}
	addrFile := filepath.Join(dir, "addr")
	args := append([]string{supervisorBin, "--health-addr", "127.0.0.1:0", "--addr-file", addrFile, "--log-level", "debug"}, flags...)
	args = append(append(args, "--"), argv...)
	args = append(append([]string(nil), wrap...), args...)
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	out, err := os.Create(p.stdout)
	if err != nil {
		t.Fatal(err)
	}
	errf, err := os.Create(p.stderr)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = out, errf
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out.Close()
	errf.Close()
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("supervisor stderr:\n%s", p.read(p.stderr))
			t.Logf("supervisor stdout:\n%s", p.read(p.stdout))
		}
	})
	p.addr = p.waitFile(addrFile, 10*time.Second)
	return p
}

func (p *proc) read(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// waitFile waits until path exists and returns its content.
func (p *proc) waitFile(path string, d time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			return string(b)
		}
		select {
		case <-p.done:
			if b, err := os.ReadFile(path); err == nil {
				return string(b)
			}
			p.t.Fatalf("supervisor exited (%v) before %s appeared", p.waitErr, path)
		case <-time.After(10 * time.Millisecond):
		}
	}
	p.t.Fatalf("%s did not appear within %s", path, d)
	return ""
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling supervisor: %v", err)
	}
}

// exitCode waits for the supervisor to exit and returns its code.
func (p *proc) exitCode(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		p.t.Fatalf("supervisor still running after %s", d)
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	if p.waitErr != nil {
		p.t.Fatalf("wait: %v", p.waitErr)
	}
	return 0
}

func (p *proc) ping() int {
	resp, err := http.Get("http://" + p.addr + "/ping")
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (p *proc) status() health.Snapshot {
	p.t.Helper()
	resp, err := http.Get("http://" + p.addr + "/status")
	if err != nil {
		p.t.Fatalf("/status: %v", err)
	}
	defer resp.Body.Close()
	var s health.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		p.t.Fatalf("/status: %v", err)
	}
	return s
}

// waitPhase polls /status until phase, then checks /ping answers code.
func (p *proc) waitPhase(phase health.Phase, code int, d time.Duration) health.Snapshot {
	p.t.Helper()
	deadline := time.Now().Add(d)
	var last health.Snapshot
	for time.Now().Before(deadline) {
		last = p.status()
		if last.Phase == phase {
			if got := p.ping(); got != code {
				p.t.Fatalf("phase %s: /ping %d, want %d", phase, got, code)
			}
			return last
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.t.Fatalf("phase %s not reached within %s; last %+v", phase, d, last)
	return last
}

// script writes an executable file in the proc's or test's dir.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func logContains(p *proc, s string) bool {
	return strings.Contains(p.read(p.stderr), s)
}
