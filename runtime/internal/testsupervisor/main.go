// Command testsupervisor runs runtime/supervise as a real process for
// volboot's own tests and benchmarks, until `volboot run` wires the real
// bootstrap in. Its bootstrap is simulated: it sleeps (cancellably),
// reports fake progress, or fails, as flags say.
//
//	testsupervisor [flags] -- CMD ARGS...
//
// The health server's bound address is written to --addr-file (atomically)
// so a test can find a ":0" port. volboot's own log lines are JSON on
// stderr; the handler's output is inherited untouched.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/runtime/health"
	"github.com/volboot/volboot/runtime/readiness"
	"github.com/volboot/volboot/runtime/supervise"
)

func main() {
	os.Exit(run())
}

func run() int {
	// First, so a signal sent as soon as the health server answers (or
	// the addr file appears) is Run's to handle, not fatal.
	sigs, stopSignals := supervise.CatchSignals()
	defer stopSignals()
	fs := flag.NewFlagSet("testsupervisor", flag.ContinueOnError)
	var (
		ready          = fs.String("ready", "started", "notify | started | http:// URL")
		readyTimeout   = fs.Duration("ready-timeout", 0, "readiness timeout")
		stopGrace      = fs.Duration("stop-grace", 10*time.Second, "SIGTERM to SIGKILL grace")
		restart        = fs.String("restart", "never", "never | on-failure")
		restartInitial = fs.Duration("restart-initial", time.Second, "first restart backoff")
		restartMax     = fs.Duration("restart-max", 30*time.Second, "backoff cap")
		maxRestarts    = fs.Int("max-restarts", 0, "consecutive restarts before giving up (0: no limit)")
		healthAddr     = fs.String("health-addr", "", "health server address (empty: none)")
		addrFile       = fs.String("addr-file", "", "write the health server's bound address here")
		bootSleep      = fs.Duration("bootstrap-sleep", 0, "simulated bootstrap duration")
		bootFail       = fs.String("bootstrap-fail", "", "make the bootstrap fail with this message")
		cancelMarker   = fs.String("bootstrap-cancel-file", "", "written when the bootstrap sees its context cancelled")
		bootStuck      = fs.Bool("bootstrap-ignore-cancel", false, "the bootstrap sleeps on, ignoring cancellation")
		linger         = fs.Duration("linger", 0, "keep answering 503 this long after a failure")
		logLevel       = fs.String("log-level", "info", "debug | info | warn | error")
		afterReady     = fs.String("after-ready-file", "", "AfterReady writes \"started\" here, then \"stopped\" when its context ends")
	)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	argv := fs.Args()

	lvl, err := zapcore.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsupervisor:", err)
		return 2
	}
	zcfg := zap.NewProductionConfig()
	zcfg.Level = zap.NewAtomicLevelAt(lvl)
	zcfg.Sampling = nil
	logger, err := zcfg.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsupervisor:", err)
		return 2
	}
	logger = logger.Named("volboot")
	defer func() { _ = logger.Sync() }()

	spec, err := readiness.Parse(*ready)
	if err != nil {
		logger.Error("bad flag", zap.Error(err))
		return 2
	}
	mode, err := supervise.ParseRestart(*restart)
	if err != nil {
		logger.Error("bad flag", zap.Error(err))
		return 2
	}

	state := health.NewState(time.Now)
	if *healthAddr != "" {
		srv, err := health.Listen(*healthAddr, state, logger)
		if err != nil {
			logger.Error("health server", zap.Error(err))
			return 2
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}()
		if *addrFile != "" {
			if err := atomicfile.Write(*addrFile, []byte(srv.Addr().String()), 0o644); err != nil {
				logger.Error("writing addr file", zap.Error(err))
				return 2
			}
		}
	}

	bootstrap := func(ctx context.Context) (supervise.Handler, error) {
		state.SetTotals(100, 2)
		if *bootStuck {
			time.Sleep(*bootSleep)
		} else if *bootSleep > 0 {
			t := time.NewTimer(*bootSleep)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				if *cancelMarker != "" {
					_ = atomicfile.Write(*cancelMarker, []byte("cancelled\n"), 0o644)
				}
				return supervise.Handler{}, ctx.Err()
			}
		}
		if *bootFail != "" {
			return supervise.Handler{}, errors.New(*bootFail)
		}
		state.SetProgress(health.Progress{BytesDone: 100, BytesTotal: 100, PackagesDone: 2, PackagesTotal: 2})
		state.SetGroups([]health.Group{{Name: "demo", State: "installed"}})
		state.SetGeneration("testgeneration")
		env := append(os.Environ(), "VOLBOOT_GROUPS=demo", "VOLBOOT_DEGRADED=", "PYTHONUNBUFFERED=1")
		return supervise.Handler{Argv: argv, Env: env}, nil
	}

	res := supervise.Run(context.Background(), supervise.Config{
		Logger:       logger,
		State:        state,
		Bootstrap:    bootstrap,
		Ready:        spec,
		ReadyTimeout: *readyTimeout,
		ReadyPoll:    50 * time.Millisecond,
		StopGrace:    *stopGrace,
		Restart: supervise.RestartPolicy{
			Mode:        mode,
			Initial:     *restartInitial,
			Max:         *restartMax,
			MaxRestarts: *maxRestarts,
		},
		FailureLinger: *linger,
		Signals:       sigs,
		AfterReady: func(ctx context.Context) {
			if *afterReady == "" {
				return
			}
			_ = atomicfile.Write(*afterReady, []byte("started\n"), 0o644)
			<-ctx.Done()
			time.Sleep(100 * time.Millisecond) // Run must wait for this
			_ = atomicfile.Write(*afterReady, []byte("stopped\n"), 0o644)
		},
	})
	fields := []zap.Field{zap.Int("code", res.Code)}
	if res.Signal != nil {
		fields = append(fields, zap.String("signal", res.Signal.String()))
	}
	if res.Err != nil {
		fields = append(fields, zap.Error(res.Err))
	}
	logger.Info("exiting", fields...)
	return res.Code
}
