package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/volboot/volboot/bootstrap"
	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/bootstrap/gpu"
	"github.com/volboot/volboot/lockfile"
)

// syncConfig wires the reconciler from the flags and environment.
func (a *app) syncConfig(progress bootstrap.Progress) (bootstrap.Config, error) {
	m, l, err := a.loadManifest()
	if err != nil {
		return bootstrap.Config{}, err
	}
	if a.opts.volume == "" {
		return bootstrap.Config{}, usageError("--volume is empty")
	}
	var size int64
	if a.opts.volumeSize != "" {
		if size, err = fetch.ParseSize(a.opts.volumeSize); err != nil {
			return bootstrap.Config{}, usageError("--volume-size: %v", err)
		}
	}
	mode, err := lockfile.ParseMode(a.env(lockfile.EnvMode))
	if err != nil {
		return bootstrap.Config{}, usageError("%s: %v", lockfile.EnvMode, err)
	}
	hfEndpoint := a.envOr("HF_ENDPOINT", "https://huggingface.co")
	creds, err := fetch.LoadCredentials(fetch.CredentialSources{Getenv: a.env, HFHost: hostOf(hfEndpoint)})
	if err != nil {
		return bootstrap.Config{}, &exitError{code: exitUsage, err: err}
	}
	return bootstrap.Config{
		Paths:       bootstrap.Paths{Root: a.opts.volume},
		Manifest:    m,
		Lock:        l,
		Python:      a.opts.python,
		Jobs:        a.opts.jobs,
		Logger:      a.log,
		Getenv:      a.env,
		HTTP:        &http.Client{},
		Credentials: creds,
		VolumeSize:  size,
		LockMode:    mode,
		LockTimeout: a.opts.lockTimeout,
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
	var ge *bootstrap.GroupError
	if errors.As(err, &ge) {
		return &exitError{code: exitDrift, err: err}
	}
	return &exitError{code: 1, err: err}
}

func (a *app) syncCommand(repair bool) *cobra.Command {
	use, short := "sync", "Bring the volume in sync with the manifest, without starting a handler"
	if repair {
		use, short = "repair", "Rebuild what is missing or broken and retry degraded groups now"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.syncConfig(nil)
			if err != nil {
				return err
			}
			cfg.Repair = repair
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			o, err := bootstrap.Sync(ctx, cfg)
			if err != nil {
				if ctx.Err() != nil {
					return &exitError{code: 128 + int(syscall.SIGTERM), err: fmt.Errorf("interrupted: %w", err)}
				}
				return syncExit(err)
			}
			fmt.Fprintf(a.stdout, "generation %s\n", o.Generation)
			for _, g := range o.Groups {
				line := fmt.Sprintf("  %-12s %s", g.Name, g.State)
				if g.Reason != "" {
					line += ": " + g.Reason
				}
				fmt.Fprintln(a.stdout, line)
			}
			return nil
		},
	}
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}
