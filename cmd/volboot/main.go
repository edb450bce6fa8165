// Command volboot is the ENTRYPOINT of a GPU inference container whose
// Python packages and model weights live on a shared network volume: it
// makes the volume hold what a pinned manifest says, then supervises the
// handler. See DESIGN.md §14 for the command line.
//
// This package is wiring only: flags, environment variables, logging and
// exit codes. The machinery lives in bootstrap/, lockfile/ and runtime/.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/volboot/volboot/bootstrap"
	"github.com/volboot/volboot/lockfile"
	"github.com/volboot/volboot/manifests"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

// Exit codes (DESIGN.md §14).
const (
	exitOK    = 0
	exitDrift = 1 // status: drift; sync/run: a required group failed
	exitUsage = 2 // usage or input error
)

// exitError carries the process exit code for an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// options are the flags every command shares.
type options struct {
	volume      string
	manifest    string
	lock        string
	python      string
	jobs        int
	logFormat   string
	healthAddr  string
	lockTimeout time.Duration
	lockTTL     string
	volumeSize  string
	durability  string
	layout      string
	localDir    string
	localBudget string
	verbose     bool
	// createVolume: a --volume that does not exist is made, and one on the
	// container's own disk is meant (tests, demos, local runs).
	createVolume bool
}

// app holds what the commands share; nothing in it is global.
type app struct {
	opts   options
	env    func(string) string
	stdout io.Writer
	stderr *os.File
	log    *zap.Logger
}

func main() {
	a := &app{env: os.Getenv, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(a.main(os.Args[1:]))
}

// main runs the command line and returns the exit code.
func (a *app) main(args []string) int {
	root := a.rootCommand()
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	code := a.report(cmd, args, err)
	if a.log != nil {
		_ = a.log.Sync()
	}
	return code
}

func (a *app) envOr(key, def string) string {
	if v := a.env(key); v != "" {
		return v
	}
	return def
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "volboot",
		Short: "Install a pinned Python stack and models onto a shared volume, then supervise the handler",
		Long: `volboot makes a shared network volume hold exactly what a pinned manifest says
(Python packages from a PEP 751 lock, Hugging Face model files), safely with many
workers booting at once, then starts and supervises the inference handler.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			level := zapcore.InfoLevel
			if a.opts.verbose {
				level = zapcore.DebugLevel
			}
			log, err := newLogger(a.opts.logFormat, a.stderr, level)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			a.log = log
			return nil
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&a.opts.volume, "volume", a.envOr("VOLBOOT_VOLUME", "/runpod-volume"), "the shared volume (env VOLBOOT_VOLUME)")
	f.StringVar(&a.opts.manifest, "manifest", a.envOr("VOLBOOT_MANIFEST", manifests.EmbeddedPrefix+manifests.Default), "manifest file, or embedded:NAME, NAME one of "+strings.Join(manifests.EmbeddedNames(), ", ")+" (env VOLBOOT_MANIFEST)")
	f.StringVar(&a.opts.lock, "lock", a.env("VOLBOOT_LOCK"), "PEP 751 lock file, overriding the manifest's [lock] path (env VOLBOOT_LOCK)")
	f.StringVar(&a.opts.python, "python", a.envOr("VOLBOOT_PYTHON", "python3"), "the interpreter to build environments for (env VOLBOOT_PYTHON)")
	f.IntVar(&a.opts.jobs, "jobs", 16, "downloads and smoke-check imports in flight (file operations are sized by the volume's filesystem)")
	f.StringVar(&a.opts.logFormat, "log-format", a.envOr("VOLBOOT_LOG_FORMAT", "auto"), "auto, console or json (env VOLBOOT_LOG_FORMAT)")
	defHealth := ""
	if p := a.env("PORT_HEALTH"); p != "" {
		defHealth = ":" + p
	}
	f.StringVar(&a.opts.healthAddr, "health-addr", defHealth, "serve /ping and /status here (default :$PORT_HEALTH when set)")
	f.DurationVar(&a.opts.lockTimeout, "lock-timeout", 30*time.Minute, "give up waiting for a live holder of the volume lock after this long")
	f.StringVar(&a.opts.lockTTL, "lock-ttl", a.envOr("VOLBOOT_LOCK_TTL", lockfile.DefaultTTL.String()),
		"a holder of the volume lock whose record stays unchanged this long counts as dead; every worker of a volume must use the same (env VOLBOOT_LOCK_TTL)")
	f.StringVar(&a.opts.volumeSize, "volume-size", a.env("VOLBOOT_VOLUME_SIZE"), "the volume's quota (e.g. 50G) where df reports the whole cluster (env VOLBOOT_VOLUME_SIZE)")
	f.StringVar(&a.opts.durability, "durability", a.envOr("VOLBOOT_DURABILITY", "auto"),
		"how unpacked files reach stable storage before they count: auto (syncfs on local disks and NFS, close on MooseFS, an fsync per file on other FUSE and the rest), files, fs or close (env VOLBOOT_DURABILITY)")
	f.StringVar(&a.opts.layout, "layout", a.envOr("VOLBOOT_LAYOUT", "auto"),
		"where the handler's environment lives: volume, local (small files on the container's disk, unpacked from the generation's pack; big files linked to the volume) or auto (local when the volume is a network or FUSE filesystem and the local budget holds it) (env VOLBOOT_LAYOUT)")
	f.StringVar(&a.opts.localDir, "local-dir", a.envOr("VOLBOOT_LOCAL_DIR", "/var/lib/volboot"), "the directory on the container's disk for local layouts (env VOLBOOT_LOCAL_DIR)")
	f.StringVar(&a.opts.localBudget, "local-budget", a.env("VOLBOOT_LOCAL_BUDGET"),
		"the most a local layout may take on the container's disk, e.g. 3G (default: its free space less 1 GiB) (env VOLBOOT_LOCAL_BUDGET)")
	f.BoolVarP(&a.opts.verbose, "verbose", "v", false, "debug logging")
	f.BoolVar(&a.opts.createVolume, "create-volume", a.env("VOLBOOT_CREATE_VOLUME") == "1",
		"make --volume if it does not exist, and accept a volume on the container's own disk; without it either is refused or warned about, since on RunPod it means the network volume did not attach (env VOLBOOT_CREATE_VOLUME=1)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError("%v", err) })
	// --version, help and the completion scripts go where the commands'
	// own output goes.
	root.SetVersionTemplate(versionLine("{{.Version}}"))
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)

	root.AddCommand(
		a.runCommand(),
		a.syncCommand(false),
		a.statusCommand(),
		a.syncCommand(true),
		a.gcCommand(),
		a.manifestCommand(),
		a.lockCommand(),
		a.versionCommand(),
	)
	return root
}

// loadManifest loads the manifest and reads its lock, as every command
// that acts on a volume does first, so that a missing lock is reported the
// same way everywhere: one line saying how to make it. The lock is parsed
// only when a command needs its content (the in-sync boot only hashes it).
func (a *app) loadManifest() (*manifests.Manifest, *bootstrap.LockSource, error) {
	m, err := manifests.Load(a.opts.manifest)
	if err != nil {
		return nil, nil, &exitError{code: exitUsage, err: err}
	}
	var name string
	var data []byte
	if a.opts.lock != "" {
		name = a.opts.lock
		data, err = os.ReadFile(a.opts.lock)
		if err != nil {
			return nil, nil, usageError("--lock: %v", err)
		}
	} else {
		name, data, err = m.ReadLock()
		if err != nil {
			return nil, nil, &exitError{code: exitUsage, err: err}
		}
	}
	return m, bootstrap.NewLockSource(strings.TrimPrefix(name, manifests.EmbeddedPrefix), data), nil
}

// inputError marks an error in the manifest or lock as exit code 2.
func inputError(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: exitUsage, err: err}
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print volboot's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprint(a.stdout, versionLine(version))
			return nil
		},
	}
}

// versionLine is what `volboot version` and `volboot --version` print.
func versionLine(v string) string { return "volboot " + v + "\n" }
