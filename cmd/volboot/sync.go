package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/volboot/volboot/bootstrap"
	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/bootstrap/gpu"
	"github.com/volboot/volboot/bootstrap/locallayout"
	"github.com/volboot/volboot/bootstrap/models"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
)

// syncConfig wires the reconciler from the flags and environment. writes
// says whether the command writes the volume (sync, run, repair, gc), and
// so may make it under --create-volume; status never does.
func (a *app) syncConfig(progress bootstrap.Progress, writes bool) (bootstrap.Config, error) {
	if a.opts.jobs < 1 {
		return bootstrap.Config{}, usageError("--jobs %d: want at least 1", a.opts.jobs)
	}
	durability, err := wheel.ParseSyncMode(a.opts.durability)
	if err != nil || durability == wheel.SyncNone {
		return bootstrap.Config{}, usageError("--durability %q: want auto, files, fs or close", a.opts.durability)
	}
	m, l, err := a.loadManifest()
	if err != nil {
		return bootstrap.Config{}, err
	}
	if a.opts.volume == "" {
		return bootstrap.Config{}, usageError("--volume is empty")
	}
	// Every path is made absolute at the door: the smoke check and the
	// handler run in other directories, and a generation's paths, the
	// handler's VIRTUAL_ENV, PATH and HF_HOME must name the same files
	// from anywhere.
	volume, err := filepath.Abs(a.opts.volume)
	if err != nil {
		return bootstrap.Config{}, usageError("--volume %q: %v", a.opts.volume, err)
	}
	if err := a.checkVolume(volume, writes); err != nil {
		return bootstrap.Config{}, err
	}
	python := a.opts.python
	if strings.ContainsRune(python, '/') && !filepath.IsAbs(python) {
		if python, err = filepath.Abs(python); err != nil {
			return bootstrap.Config{}, usageError("--python %q: %v", a.opts.python, err)
		}
	}
	var size int64
	if a.opts.volumeSize != "" {
		if size, err = fetch.ParseSize(a.opts.volumeSize); err != nil {
			return bootstrap.Config{}, usageError("--volume-size: %v", err)
		}
	}
	ttl, err := time.ParseDuration(a.opts.lockTTL)
	if err != nil || ttl < time.Second {
		return bootstrap.Config{}, usageError("--lock-ttl (VOLBOOT_LOCK_TTL) %q: want a duration of at least 1s, such as 60s", a.opts.lockTTL)
	}
	mode, err := lockfile.ParseMode(a.env(lockfile.EnvMode))
	if err != nil {
		return bootstrap.Config{}, usageError("%s: %v", lockfile.EnvMode, err)
	}
	local, err := a.localLayout()
	if err != nil {
		return bootstrap.Config{}, err
	}
	hf, err := url.Parse(models.EndpointFromEnv(a.env))
	if err != nil || hf.Host == "" {
		return bootstrap.Config{}, usageError("HF_ENDPOINT %q is not a URL", a.env("HF_ENDPOINT"))
	}
	creds, err := fetch.LoadCredentials(fetch.CredentialSources{Getenv: a.env, HFHost: hf.Hostname()})
	if err != nil {
		return bootstrap.Config{}, &exitError{code: exitUsage, err: err}
	}
	return bootstrap.Config{
		Paths:       bootstrap.Paths{Root: volume},
		Manifest:    m,
		Lock:        l,
		Python:      python,
		Jobs:        a.opts.jobs,
		Logger:      a.log,
		Getenv:      a.env,
		HTTP:        &http.Client{},
		Credentials: creds,
		VolumeSize:  size,
		Durability:  durability,
		Local:       local,
		LockMode:    mode,
		LockTimeout: a.opts.lockTimeout,
		LockTTL:     ttl,
		GPU:         gpu.Options{Override: a.env("VOLBOOT_GPU_PROBE")},
		Progress:    progress,
		Terminal:    isTerminal(a.stderr),
		ProgressOut: a.stderr,
	}, nil
}

// syncExit maps a sync error to volboot's exit codes: a failed required
// group is 1, bad input 2, anything else (network, disk) 1.
func syncExit(err error) error {
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	var ie *bootstrap.InputError
	if errors.As(err, &ie) {
		return &exitError{code: exitUsage, err: err}
	}
	var ge *bootstrap.GroupError
	if errors.As(err, &ge) {
		return &exitError{code: exitDrift, err: err}
	}
	return &exitError{code: 1, err: err}
}

func (a *app) syncCommand(repair bool) *cobra.Command {
	use, short := "sync", "Bring the volume in sync with the manifest, without starting a handler"
	example := `  # Fill a volume from a pod before any worker boots from it
  volboot sync --volume /workspace --manifest /app/volboot.toml

  # The same with a lock kept apart from the manifest, and plain log lines
  volboot sync --manifest volboot.toml --lock locks/pylock.toml --log-format console`
	if repair {
		use, short = "repair", "Rebuild what is missing or broken and retry degraded groups now"
		example = `  # See what is wrong, mend it, and check again
  volboot status --verify --manifest /app/volboot.toml
  volboot repair --manifest /app/volboot.toml
  volboot status --verify --manifest /app/volboot.toml`
	}
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.syncConfig(nil, true)
			if err != nil {
				return err
			}
			cfg.Repair = repair
			ctx, sig := cancelOnSignal(cmd.Context())
			o, err := bootstrap.Sync(ctx, cfg)
			if s := sig(); s != 0 {
				return &exitError{code: 128 + int(s), err: fmt.Errorf("stopped by %v; the next sync carries on where this one stopped", s)}
			}
			var me *bootstrap.ModelsError
			if err != nil && !(errors.As(err, &me) && o != nil) {
				return syncExit(err)
			}
			// A ModelsError comes with a generation: print it, then fail.
			fmt.Fprintf(a.stdout, "generation %s\n", o.Generation)
			for _, g := range o.Groups {
				line := fmt.Sprintf("  %-12s %s", g.Name, g.State)
				if g.Reason != "" {
					line += ": " + g.Reason
				}
				fmt.Fprintln(a.stdout, line)
			}
			if err != nil {
				return syncExit(err)
			}
			return nil
		},
	}
}

// cancelOnSignal returns a context cancelled by SIGINT, SIGTERM or SIGHUP,
// and a function naming the signal that cancelled it (0 if none). The
// watching goroutine ends when ctx does.
func cancelOnSignal(parent context.Context) (context.Context, func() syscall.Signal) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	var got syscall.Signal
	go func() {
		defer close(done)
		defer signal.Stop(ch)
		select {
		case s := <-ch:
			got = s.(syscall.Signal)
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() syscall.Signal {
		cancel()
		<-done
		return got
	}
}

// localLayout reads --layout, --local-dir and --local-budget.
func (a *app) localLayout() (bootstrap.LocalLayout, error) {
	mode, err := locallayout.ParseMode(a.opts.layout)
	if err != nil {
		return bootstrap.LocalLayout{}, usageError("--layout (VOLBOOT_LAYOUT): %v", err)
	}
	l := bootstrap.LocalLayout{Mode: mode}
	if mode != locallayout.ModeVolume {
		if a.opts.localDir == "" {
			return l, usageError("--local-dir (VOLBOOT_LOCAL_DIR) is empty: name a directory on the container's disk, or pass --layout volume")
		}
		if l.Dir, err = filepath.Abs(a.opts.localDir); err != nil {
			return l, usageError("--local-dir %q: %v", a.opts.localDir, err)
		}
	}
	if a.opts.localBudget != "" {
		if l.Budget, err = fetch.ParseSize(a.opts.localBudget); err != nil || l.Budget <= 0 {
			return l, usageError("--local-budget (VOLBOOT_LOCAL_BUDGET) %q: want a size such as 3G", a.opts.localBudget)
		}
	}
	return l, nil
}
