package supervise

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/runtime/health"
)

func TestBackoff(t *testing.T) {
	p := RestartPolicy{Initial: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Backoff(i + 1); got != w*time.Millisecond {
			t.Errorf("Backoff(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := (RestartPolicy{}).Backoff(1); got != time.Second {
		t.Errorf("default first backoff %v", got)
	}
	if got := (RestartPolicy{}).Backoff(1000); got != 30*time.Second {
		t.Errorf("default cap %v (must not overflow)", got)
	}
}

func TestParseRestart(t *testing.T) {
	for in, want := range map[string]RestartMode{"": RestartNever, "never": RestartNever, "on-failure": RestartOnFailure} {
		if got, err := ParseRestart(in); err != nil || got != want {
			t.Errorf("ParseRestart(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseRestart("always"); err == nil || !strings.Contains(err.Error(), `"always"`) {
		t.Errorf("ParseRestart(always) err = %v", err)
	}
}

func TestLookPathUsesHandlersPATH(t *testing.T) {
	bin := t.TempDir()
	py := filepath.Join(bin, "python")
	if err := os.WriteFile(py, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "notexec"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=/x", "PATH=" + bin + ":/usr/bin:/bin"}
	if got, err := lookPath([]string{"python", "-u"}, env); err != nil || got != py {
		t.Errorf("lookPath(python) = %q, %v; want the generation's %q", got, err, py)
	}
	if got, err := lookPath([]string{"sh"}, env); err != nil || !strings.HasSuffix(got, "/sh") {
		t.Errorf("lookPath(sh) = %q, %v", got, err)
	}
	if _, err := lookPath([]string{"notexec"}, env); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("non-executable found: %v", err)
	}
	if _, err := lookPath([]string{filepath.Join(bin, "notexec")}, env); err == nil {
		t.Error("non-executable absolute path accepted")
	}
	if _, err := lookPath(nil, env); err == nil {
		t.Error("empty argv accepted")
	}
}

func TestWithoutKey(t *testing.T) {
	got := withoutKey([]string{"A=1", "NOTIFY_SOCKET=/run/systemd/notify", "NOTIFY_SOCKETX=2", "B"}, "NOTIFY_SOCKET")
	if strings.Join(got, " ") != "A=1 NOTIFY_SOCKETX=2 B" {
		t.Errorf("withoutKey = %v", got)
	}
}

func TestRunValidatesConfig(t *testing.T) {
	res := Run(context.Background(), Config{Logger: zap.NewNop()})
	if res.Code != 2 || res.Err == nil {
		t.Errorf("Run without State/Bootstrap = %+v", res)
	}
}

// A bootstrap that fails (no signal involved) gives code 1, the error, and
// phase failed; no process is started, so this can run in-process.
func TestRunBootstrapError(t *testing.T) {
	st := health.NewState(nil)
	res := Run(context.Background(), Config{
		Logger: zap.NewNop(),
		State:  st,
		Bootstrap: func(ctx context.Context) (Handler, error) {
			return Handler{}, errors.New("lock held by host-b for 20m")
		},
	})
	if res.Code != 1 || res.Err == nil || !strings.Contains(res.Err.Error(), "host-b") {
		t.Errorf("Result %+v", res)
	}
	if st.Phase() != health.PhaseFailed {
		t.Errorf("phase %s, want failed", st.Phase())
	}
}

func TestRunContextCancelsBootstrap(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	saw := make(chan struct{})
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	res := Run(ctx, Config{
		Logger: zap.NewNop(),
		State:  health.NewState(nil),
		Bootstrap: func(ctx context.Context) (Handler, error) {
			<-ctx.Done()
			close(saw)
			return Handler{}, ctx.Err()
		},
	})
	select {
	case <-saw:
	default:
		t.Fatal("bootstrap did not see cancellation")
	}
	if res.Code == 0 || !errors.Is(res.Err, context.Canceled) {
		t.Errorf("Result %+v", res)
	}
}
