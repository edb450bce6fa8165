package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/lockgen"
	"github.com/volboot/volboot/manifests"
)

// lockOptions are volboot lock's own flags.
type lockOptions struct {
	out             string
	check           bool
	upgrade         bool
	upgradePackages []string
	uv              string
}

func (a *app) lockCommand() *cobra.Command {
	var o lockOptions
	c := &cobra.Command{
		Use:   "lock",
		Short: "Resolve the manifest's groups into its PEP 751 lock with uv " + lockgen.UVVersion,
		Long: `Resolve the manifest's groups with uv ` + lockgen.UVVersion + ` (from PATH, or installed from PyPI into
volboot's cache) for the manifest's target (CPython from python.requires on manylinux
x86_64), not for this machine, and write the lock with each package's groups in its
marker. Pins of an existing lock are kept where the manifest allows (--upgrade drops
them, --upgrade-package frees one package). --check only says whether the lock still
satisfies the manifest: exit 0 if so, 1 with the reasons if not.`,
		Example: `  volboot lock --manifest volboot.toml
  volboot lock --manifest volboot.toml --check
  volboot lock --manifest volboot.toml --upgrade-package transformers`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.check {
				if o.upgrade || len(o.upgradePackages) > 0 {
					return usageError("--check does not go with --upgrade or --upgrade-package")
				}
				return a.checkLock(o)
			}
			return a.lock(cmd, o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.out, "out", "", "the lock file to write or check (default: --lock, else the manifest's [lock] path; for an embedded manifest its name in the current directory)")
	f.BoolVar(&o.check, "check", false, "only check that the lock still satisfies the manifest (exit 0), or say why not (exit 1)")
	f.BoolVar(&o.upgrade, "upgrade", false, "resolve afresh, ignoring the pins of the existing lock")
	f.StringArrayVar(&o.upgradePackages, "upgrade-package", nil, "let this package move to the newest version the manifest allows, keeping the other pins where possible (repeatable)")
	f.StringVar(&o.uv, "uv", a.env("VOLBOOT_UV"), "a uv "+lockgen.UVVersion+" binary to use (env VOLBOOT_UV); default: uv on PATH if it is that version, else volboot's own copy")
	return c
}

// lockPath is the lock volboot lock writes: --out, else --lock, else the
// manifest's; an embedded manifest's lock goes to the current directory.
func (a *app) lockPath(m *manifests.Manifest, o lockOptions) string {
	switch {
	case o.out != "":
		return o.out
	case a.opts.lock != "":
		return a.opts.lock
	}
	file := m.LockFile()
	if name, ok := strings.CutPrefix(file, manifests.EmbeddedPrefix); ok {
		return filepath.Base(name)
	}
	return file
}

func (a *app) lock(cmd *cobra.Command, o lockOptions) error {
	start := time.Now()
	m, err := manifests.Load(a.opts.manifest)
	if err != nil {
		return inputError(err)
	}
	out := a.lockPath(m, o)
	previous, err := os.ReadFile(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		previous = nil
		if len(o.upgradePackages) > 0 {
			return usageError("--upgrade-package: there is no lock at %s to keep the other pins of; run volboot lock without it first", out)
		}
	case err != nil:
		return usageError("read the existing lock: %v", err)
	}
	ctx, sig := cancelOnSignal(cmd.Context())
	uv, res, err := a.resolveLock(ctx, m, out, previous, o)
	if s := sig(); s != 0 {
		return &exitError{code: 128 + int(s), err: fmt.Errorf("stopped by %v; nothing written", s)}
	}
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	if err := atomicfile.Write(out, res.Data, 0o644); err != nil {
		return &exitError{code: 1, err: fmt.Errorf("write the lock: %w", err)}
	}
	if base := filepath.Base(out); !lockgen.PEP751Name(base) {
		fmt.Fprintf(a.stdout, "warning: %s is not a PEP 751 lock file name (pylock.toml or pylock.<name>.toml): volboot reads it, but uv and pip refuse to (e.g. for uv pip install -r); name it pylock.<name>.toml in [lock].path or --out\n", base)
	}
	for _, p := range res.Problems {
		fmt.Fprintf(a.stdout, "warning: %s\n", indent(p.Message))
	}
	for _, w := range res.Check.Warnings {
		fmt.Fprintf(a.stdout, "warning: %s\n", w)
	}
	for _, e := range res.Check.Errors {
		fmt.Fprintf(a.stdout, "error: %s\n", e)
	}
	for _, c := range res.Changes {
		switch {
		case c.Old == "":
			fmt.Fprintf(a.stdout, "added: %s %s\n", c.Package, c.New)
		case c.New == "":
			fmt.Fprintf(a.stdout, "removed: %s %s\n", c.Package, c.Old)
		default:
			fmt.Fprintf(a.stdout, "changed: %s %s -> %s\n", c.Package, c.Old, c.New)
		}
	}
	for _, name := range o.upgradePackages {
		if !movedOrKept(res, name) {
			fmt.Fprintf(a.stdout, "warning: --upgrade-package %s: no package of that name is in the lock\n", name)
		}
	}
	var groups []string
	unlocked := 0
	for _, g := range res.Groups {
		if g.Locked {
			groups = append(groups, fmt.Sprintf("%s %d", g.Name, g.Packages))
		} else {
			groups = append(groups, g.Name+" not locked")
			unlocked++
		}
	}
	sdists := 0
	for _, p := range res.Document.Packages {
		if len(p.Wheels) == 0 {
			sdists++
		}
	}
	fmt.Fprintf(a.stdout, "wrote %s: %d packages (%s; %d with no wheel) for %s with uv %s (%s) in %.1fs, %d uv runs\n",
		out, len(res.Document.Packages), strings.Join(groups, ", "), sdists, m.DefaultPlatform(), uv.Version, uv.Source, time.Since(start).Seconds(), res.UVRuns)
	if unlocked > 0 || len(res.Check.Errors) > 0 {
		what := []string{}
		if unlocked > 0 {
			what = append(what, fmt.Sprintf("%d group(s) could not be locked", unlocked))
		}
		if len(res.Check.Errors) > 0 {
			what = append(what, fmt.Sprintf("`volboot manifest check` finds %d problem(s) with it", len(res.Check.Errors)))
		}
		return &exitError{code: 1, err: fmt.Errorf("%s written, but %s (above)", out, strings.Join(what, " and "))}
	}
	return nil
}

// resolveLock finds uv and makes the lock.
func (a *app) resolveLock(ctx context.Context, m *manifests.Manifest, out string, previous []byte, o lockOptions) (lockgen.UV, *lockgen.Result, error) {
	runner := lockgen.ExecRunner{}
	env := lockgen.UVEnv(os.Environ())
	uv, err := lockgen.UVFinder{
		Explicit: o.uv,
		CacheDir: a.cacheDir(),
		Python:   a.opts.python,
		Env:      env,
		Runner:   runner,
		Log:      a.log,
	}.Find(ctx)
	if err != nil {
		return uv, nil, err
	}
	res, err := lockgen.Lock(ctx, lockgen.Request{
		Manifest:        m,
		Platform:        m.DefaultPlatform(),
		LockFile:        out,
		Previous:        previous,
		Upgrade:         o.upgrade,
		UpgradePackages: o.upgradePackages,
		UV:              uv,
		Runner:          runner,
		Fetcher:         lockgen.HTTPFetcher{Client: &http.Client{Timeout: 30 * time.Minute}},
		Env:             env,
		Jobs:            2,
		Log:             a.log,
	})
	return uv, res, err
}

func movedOrKept(res *lockgen.Result, name string) bool {
	n := pep508.NormalizeName(name)
	for _, p := range res.Document.Packages {
		if p.Normalized == n {
			return true
		}
	}
	return false
}

// checkLock is volboot lock --check.
func (a *app) checkLock(o lockOptions) error {
	m, err := manifests.Load(a.opts.manifest)
	if err != nil {
		return inputError(err)
	}
	var file string
	var data []byte
	if o.out != "" || a.opts.lock != "" {
		file = a.lockPath(m, o)
		data, err = os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			return &exitError{code: 1, err: fmt.Errorf("there is no lock at %s: run volboot lock", file)}
		}
	} else {
		file, data, err = m.ReadLock()
		if errors.Is(err, manifests.ErrLockMissing) {
			return &exitError{code: 1, err: err}
		}
	}
	if err != nil {
		return inputError(err)
	}
	p := m.DefaultPlatform()
	res, err := lockgen.Check(m, p, strings.TrimPrefix(file, manifests.EmbeddedPrefix), data)
	if err != nil {
		return inputError(err)
	}
	for _, w := range res.Report.Warnings {
		fmt.Fprintf(a.stdout, "warning: %s\n", w)
	}
	for _, s := range res.Stale {
		fmt.Fprintf(a.stdout, "stale: %s\n", s)
	}
	for _, e := range res.Report.Errors {
		fmt.Fprintf(a.stdout, "error: %s\n", e)
	}
	if !res.MadeByVolboot {
		fmt.Fprintf(a.stdout, "note: %s was not made by volboot lock: only checked that it meets the manifest, not that it holds nothing more\n", file)
	}
	if !res.OK() {
		return &exitError{code: 1, err: fmt.Errorf("%s does not satisfy %s: %d stale, %d error(s) (above); run volboot lock", file, m.File, len(res.Stale), len(res.Report.Errors))}
	}
	fmt.Fprintf(a.stdout, "ok: %s satisfies %s for %s\n", file, m.File, p)
	return nil
}

// cacheDir is volboot's cache directory on this machine (uv goes there).
func (a *app) cacheDir() string {
	if d := a.env("XDG_CACHE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "volboot")
	}
	if h := a.env("HOME"); h != "" {
		return filepath.Join(h, ".cache", "volboot")
	}
	return ""
}

// indent keeps a message's continuation lines under it.
func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n  ") }
