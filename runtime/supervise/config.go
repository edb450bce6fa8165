package supervise

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/runtime/health"
	"github.com/volboot/volboot/runtime/readiness"
)

// RestartMode is the manifest's [run].restart.
type RestartMode int

const (
	// RestartNever exits with the handler's code when it ends, so the
	// platform replaces the worker. The default.
	RestartNever RestartMode = iota
	// RestartOnFailure starts the handler again, after a backoff, when it
	// ends with a non-zero code or a signal volboot did not send.
	RestartOnFailure
)

// ParseRestart reads [run].restart: "never" (or "") or "on-failure".
func ParseRestart(v string) (RestartMode, error) {
	switch v {
	case "", "never":
		return RestartNever, nil
	case "on-failure":
		return RestartOnFailure, nil
	}
	return 0, fmt.Errorf(`restart = %q: want "never" or "on-failure"`, v)
}

func (m RestartMode) String() string {
	if m == RestartOnFailure {
		return "on-failure"
	}
	return "never"
}

// RestartPolicy says whether and how fast a failed handler is restarted.
// The n-th consecutive failure waits Initial*2^(n-1), at most Max. A run
// that lasted ResetAfter or longer counts as a success for the backoff, so
// a handler that crashes once a day restarts quickly every time.
type RestartPolicy struct {
	Mode        RestartMode
	Initial     time.Duration // default 1s
	Max         time.Duration // default 30s
	MaxRestarts int           // consecutive restarts before giving up; 0 = no limit
	ResetAfter  time.Duration // default 60s
}

func (p RestartPolicy) withDefaults() RestartPolicy {
	if p.Initial <= 0 {
		p.Initial = time.Second
	}
	if p.Max <= 0 {
		p.Max = 30 * time.Second
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	if p.ResetAfter <= 0 {
		p.ResetAfter = time.Minute
	}
	return p
}

// Backoff is the wait before restart number n (1-based) of a run of
// consecutive failures.
func (p RestartPolicy) Backoff(n int) time.Duration {
	p = p.withDefaults()
	d := p.Initial
	for i := 1; i < n; i++ {
		d *= 2
		if d >= p.Max {
			return p.Max
		}
	}
	return d
}

// Handler is what to start once the bootstrap is done.
type Handler struct {
	// Argv is the command; Argv[0] without a slash is looked up in the
	// PATH found in Env (the generation's bin comes first there), not in
	// volboot's own PATH.
	Argv []string
	// Env is the handler's whole environment (DESIGN.md §15), built by the
	// caller. Supervise adds NOTIFY_SOCKET for ready = "notify" and
	// removes an inherited NOTIFY_SOCKET otherwise, so a handler never
	// talks to a systemd that volboot itself might run under.
	Env []string
	// Dir is the working directory; "" keeps volboot's.
	Dir string
	// Files are descriptors the handler inherits as 3, 4, … after its
	// stdio (volboot passes the local tree's lease, so that the lease
	// lasts as long as the handler even if volboot dies first). The
	// caller keeps them open while the handler may be started.
	Files []*os.File
}

// Config is everything Run needs. Logger, State and Bootstrap are
// required.
type Config struct {
	Logger *zap.Logger
	// State is what the health server reports; Run moves its phase.
	State *health.State
	// Bootstrap makes the volume ready and says what to run. Its context
	// is cancelled when a signal arrives (or Run's context ends); it must
	// then return promptly, having released what it holds; Run waits for
	// it at most StopGrace. Bootstrap may use os/exec: the reaper only
	// starts after it returns.
	Bootstrap func(ctx context.Context) (Handler, error)

	Ready        readiness.Spec
	ReadyTimeout time.Duration // 0: wait for readiness forever
	// ReadyPoll is the HTTP readiness polling interval; default 250ms.
	ReadyPoll time.Duration
	// HTTPClient polls an http:// readiness URL; default: a client that
	// ignores proxy settings (the URL is the handler's own port).
	HTTPClient *http.Client

	// StopGrace is how long after SIGTERM the handler's group gets
	// SIGKILL; default 10s.
	StopGrace time.Duration
	Restart   RestartPolicy

	// FailureLinger keeps volboot alive, answering /ping 503, this long
	// after a failure before it exits, so a load balancer sees an
	// unhealthy worker rather than a refused connection. A signal ends it
	// early. Default 0.
	FailureLinger time.Duration

	// InitTimeout, when positive, is watched during the bootstrap (see
	// health.WatchInitBudget); InitWatchInterval defaults to 5s.
	InitTimeout       time.Duration
	InitWatchInterval time.Duration

	// Signals, when set, is the channel from CatchSignals; otherwise Run
	// catches signals itself from the moment it is called.
	Signals <-chan os.Signal

	// AfterReady, when set, runs in a goroutine of Run's once the handler
	// is first ready: work that must not delay readiness (emptying the
	// volume's trash). Its context ends when Run stops, and Run waits for
	// it to return, at most StopGrace.
	AfterReady func(ctx context.Context)

	// TempDir holds the notify socket; default os.TempDir().
	TempDir string
}

func (c Config) withDefaults() (Config, error) {
	if c.Logger == nil || c.State == nil || c.Bootstrap == nil {
		return c, fmt.Errorf("supervise: Config needs Logger, State and Bootstrap")
	}
	if c.ReadyPoll <= 0 {
		c.ReadyPoll = 250 * time.Millisecond
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	}
	if c.StopGrace <= 0 {
		c.StopGrace = 10 * time.Second
	}
	if c.InitWatchInterval <= 0 {
		c.InitWatchInterval = 5 * time.Second
	}
	c.Restart = c.Restart.withDefaults()
	return c, nil
}
