package supervise_test

import (
	"context"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/runtime/health"
	"github.com/volboot/volboot/runtime/readiness"
	"github.com/volboot/volboot/runtime/supervise"
)

// How `volboot run` wires the supervisor: the health server starts before
// the bootstrap, the bootstrap reports into the same State and returns the
// handler's command and environment, and the process exits with
// Result.Code. (Compiled, not run: it would take over the test's signals.)
func ExampleRun() {
	sigs, stopSignals := supervise.CatchSignals() // before anything else
	defer stopSignals()
	logger := zap.NewExample()
	state := health.NewState(time.Now)
	if addr := health.DefaultAddr(os.Getenv); addr != "" {
		srv, err := health.Listen(addr, state, logger)
		if err != nil {
			logger.Fatal("health server", zap.Error(err))
		}
		defer srv.Shutdown(context.Background())
	}
	initTimeout, err := health.ParseInitTimeout(os.Getenv("RUNPOD_INIT_TIMEOUT"))
	if err != nil {
		logger.Fatal("bad environment", zap.Error(err))
	}
	ready, _ := readiness.Parse("notify")         // [run].ready
	restart, _ := supervise.ParseRestart("never") // [run].restart

	res := supervise.Run(context.Background(), supervise.Config{
		Logger: logger,
		State:  state,
		Bootstrap: func(ctx context.Context) (supervise.Handler, error) {
			// sync the volume (cancellable through ctx), updating
			// state.SetTotals / AddProgress / SetGroups / SetGeneration,
			// take the use-lease, then build the handler environment (docs/DESIGN.md §15).
			return supervise.Handler{
				Argv: []string{"python", "-u", "/app/handler.py"},
				Env:  []string{"PATH=/runpod-volume/.volboot/envs/<id>/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1"},
			}, nil
		},
		Ready:        ready,
		ReadyTimeout: initTimeout,
		StopGrace:    25 * time.Second,
		Restart:      supervise.RestartPolicy{Mode: restart},
		InitTimeout:  initTimeout,
		Signals:      sigs,
	})
	if res.Err != nil {
		logger.Error("volboot run", zap.Error(res.Err))
	}
	os.Exit(res.Code)
}
