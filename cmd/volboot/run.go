package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap"
	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/locallayout"
	"github.com/volboot/volboot/lockfile"
	"github.com/volboot/volboot/manifests"
	"github.com/volboot/volboot/runtime/health"
	"github.com/volboot/volboot/runtime/readiness"
	"github.com/volboot/volboot/runtime/supervise"
)

func (a *app) runCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "run [flags] [-- CMD ARGS...]",
		Short: "Bring the volume in sync, then start and supervise the handler (the ENTRYPOINT)",
		Example: `  # The container's ENTRYPOINT: the handler is [run].command of the manifest
  volboot run --manifest /app/volboot.toml

  # The handler given after --, as a Dockerfile's ENTRYPOINT ["volboot", "run", "--"] and CMD do
  volboot run --manifest /app/volboot.toml -- python -u /app/handler.py

  # Locally: a scratch volume, console logs, /ping and /status on port 8080
  volboot run --volume /tmp/vol --manifest volboot.toml --log-format console --health-addr :8080 -- python -u handler.py`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.run(cmd.Context(), args)
		},
	}
}

// healthProgress forwards the reconciler's progress to the health state.
type healthProgress struct{ s *health.State }

func (h healthProgress) Phase(text string)          { h.s.SetDetail(text) }
func (h healthProgress) Bytes(done, total int64)    { h.s.SetBytes(done, total) }
func (h healthProgress) Packages(done, total int)   { h.s.SetPackages(done, total) }
func (h healthProgress) Unpacked(done, total int64) { h.s.SetUnpacked(done, total) }

func (a *app) run(ctx context.Context, argv []string) error {
	// Catch signals before anything slow: one that arrives while the
	// health server starts is queued for the supervisor, not fatal.
	sigs, stopSignals := supervise.CatchSignals()
	defer stopSignals()
	state := health.NewState(time.Now)
	cfg, err := a.syncConfig(healthProgress{state}, true)
	if err != nil {
		return err
	}
	m := cfg.Manifest
	if len(argv) == 0 {
		argv = m.Run.Command
	}
	if len(argv) == 0 {
		return usageError("no handler: pass it after -- or set [run].command in %s", m.File)
	}
	ready, err := readiness.Parse(m.Run.Ready)
	if err != nil {
		return usageError("%s: %v", m.Where("run.ready"), err)
	}
	restart, err := supervise.ParseRestart(m.Run.Restart)
	if err != nil {
		return usageError("%s: %v", m.Where("run.restart"), err)
	}
	initTimeout, err := health.ParseInitTimeout(a.env("RUNPOD_INIT_TIMEOUT"))
	if err != nil {
		return usageError("RUNPOD_INIT_TIMEOUT: %v", err)
	}
	if a.opts.healthAddr != "" {
		srv, err := health.Listen(a.opts.healthAddr, state, a.log)
		if err != nil {
			return usageError("--health-addr: %v", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
	}
	tmp, err := os.MkdirTemp("", "volboot-run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// The use-lease lives as long as the handler may run.
	leaseCtx, stopLease := context.WithCancel(context.Background())
	defer stopLease()
	var lease *lockfile.Lease
	var leased atomic.Bool
	// The local tree's lease lives as long as the handler may run from
	// the tree (the handler inherits it too: DESIGN.md §5.8).
	var localLease *locallayout.Lease
	var generation atomic.Value // string: the generation booted, for the local collection
	defer func() {
		localLease.Close()
		if lease != nil {
			lease.Release()
		}
	}()

	res := supervise.Run(ctx, supervise.Config{
		Logger: a.log,
		State:  state,
		Bootstrap: func(bctx context.Context) (supervise.Handler, error) {
			o, l, err := syncAndLease(bctx, leaseCtx, cfg, a.log)
			if err != nil {
				return supervise.Handler{}, err
			}
			lease = l
			leased.Store(l != nil)
			// The local tree's links point at the generation's store
			// files: it is laid out only once the lease protects them.
			if o, localLease, err = cfg.Localize(bctx, o); err != nil {
				return supervise.Handler{}, err
			}
			generation.Store(o.Generation)
			groups := make([]health.Group, 0, len(o.Groups))
			for _, g := range o.Groups {
				groups = append(groups, health.Group{Name: g.Name, State: g.State, Reason: g.Reason})
			}
			state.SetGroups(groups)
			state.SetGeneration(o.Generation)
			env, err := handlerEnv(os.Environ(), cfg.Paths, m, o, tmp)
			if err != nil {
				return supervise.Handler{}, err
			}
			h := supervise.Handler{Argv: argv, Env: env}
			if localLease != nil {
				h.Files = []*os.File{localLease.File()}
			}
			return h, nil
		},
		Ready:        ready,
		ReadyTimeout: m.Run.ReadyTimeout,
		StopGrace:    m.Run.StopGrace,
		Restart:      supervise.RestartPolicy{Mode: restart, MaxRestarts: m.Run.MaxRestarts},
		InitTimeout:  initTimeout,
		Signals:      sigs,
		TempDir:      tmp,
		AfterReady: func(ctx context.Context) {
			// The container's disk first: its removals are local and
			// quick, the volume's may take minutes on a network volume.
			gen, _ := generation.Load().(string)
			collectLocal(ctx, cfg, gen, a.log)
			if leased.Load() { // a volume that refused the lease refuses the removals too
				emptyTrash(ctx, cfg, a.log)
			}
		},
	})
	if res.Err != nil {
		var ie *bootstrap.InputError
		if errors.As(res.Err, &ie) && res.Code == 1 {
			res.Code = exitUsage // the manifest or lock is wrong, not the volume
		}
	}
	if res.Code != 0 {
		// res.Err, when there is one, is reported once, by main.
		return &exitError{code: res.Code, err: res.Err}
	}
	return nil
}

// syncAndLease brings the volume in sync and holds a use-lease on the
// generation it chose. With the lease written, it reads the generation's
// marker once more: gc takes the marker from a generation before it lists
// the leases a last time and removes it (bootstrap.GC), so a marker still
// there means gc will see the lease, and a marker gone means gc is removing
// it and the sync must run again (it waits for gc's lock, then rebuilds).
func syncAndLease(ctx, leaseCtx context.Context, cfg bootstrap.Config, log *zap.Logger) (*bootstrap.Outcome, *lockfile.Lease, error) {
	host, _ := os.Hostname()
	for attempt := 1; ; attempt++ {
		o, err := bootstrap.Sync(ctx, cfg)
		var me *bootstrap.ModelsError
		if errors.As(err, &me) && o != nil {
			// The packages are there; the handler may fetch the models
			// itself or say what it lacks, and the next boot tries again.
			log.Error(err.Error()+": starting the handler all the same", zap.String("generation", o.Generation))
		} else if err != nil {
			return nil, nil, err
		}
		lease, err := lockfile.HoldLease(leaseCtx, lockfile.LeaseOptions{
			Dir: cfg.Paths.Volboot(), WorkerID: sanitizeID(host) + "-" + strconv.Itoa(os.Getpid()),
			Generation: o.Generation, Logger: log,
		})
		if err != nil && errVolumeReadOnly(err) {
			// A volume this worker may read but not write (mounted
			// read-only, or owned by another user) still serves a
			// complete generation; only gc elsewhere cannot see it.
			log.Warn("the volume refuses writes, so this worker holds no use-lease: gc on another worker cannot see that it uses this generation and may remove it while it runs",
				zap.String("generation", o.Generation), zap.Error(err))
			return o, nil, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("use-lease: %w", err)
		}
		merr := o.StillComplete()
		if merr == nil {
			return o, lease, nil
		}
		lease.Release()
		if attempt == 3 {
			return nil, nil, fmt.Errorf("generation %s was removed under this worker three times (gc running?): %w", o.Generation, merr)
		}
		log.Warn("gc is removing the generation this worker chose; syncing again", zap.String("generation", o.Generation))
	}
}

// emptyTrash removes what earlier boots and gc moved to the volume's trash
// (bootstrap.Config.EmptyTrash), once the handler is ready: a boot never
// waits for it, and a worker killed meanwhile leaves the rest to the next.
func emptyTrash(ctx context.Context, cfg bootstrap.Config, log *zap.Logger) {
	r, err := cfg.EmptyTrash(ctx)
	if r.Items+r.Left > 0 || err != nil {
		log.Info("emptied the volume's trash in the background", zap.Int("items", r.Items), zap.Int("removed", r.Removed), zap.Int("left", r.Left), zap.Error(err))
	}
}

// collectLocal removes, once the handler is ready, the local trees of
// other generations that no process of the container runs from, and
// empties the local trash (bootstrap.Config.CollectLocal): a long-lived
// container disk does not fill up as generations change.
func collectLocal(ctx context.Context, cfg bootstrap.Config, gen string, log *zap.Logger) {
	r, err := cfg.CollectLocal(ctx, false, false, gen)
	if len(r.Removed)+len(r.InUse)+r.Leftovers+r.Trash.Items+r.Trash.Left > 0 || err != nil {
		log.Info("collected local trees in the background", zap.Strings("removed", r.Removed), zap.Strings("in_use", r.InUse),
			zap.Int("leftovers", r.Leftovers), zap.Int("trash_items", r.Trash.Items), zap.Int("trash_left", r.Trash.Left), zap.Error(err))
	}
}

// sanitizeID keeps a worker id to the characters a lease file name allows.
func sanitizeID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// capabilities is the JSON file VOLBOOT_CAPABILITIES names (DESIGN.md §15).
type capabilities struct {
	Generation string                   `json:"generation"`
	Groups     []bootstrap.GroupOutcome `json:"groups"`
	Usable     []string                 `json:"usable"`
	Degraded   map[string]string        `json:"degraded"`
	Models     []bootstrap.ModelRecord  `json:"models"`
	GPU        json.RawMessage          `json:"gpu,omitempty"`
}

// handlerEnv builds the handler's environment: the inherited one, then
// the generation's (VIRTUAL_ENV, PATH), the volume's caches, the group
// facts, and the manifest's [run].env.
func handlerEnv(base []string, p bootstrap.Paths, m *manifests.Manifest, o *bootstrap.Outcome, tmp string) ([]string, error) {
	vars := map[string]string{}
	var order []string
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := vars[k]; !dup {
			order = append(order, k)
		}
		vars[k] = v
	}
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for k, v := range m.Run.Env {
		set(k, v)
	}
	delete(vars, "PYTHONHOME")
	set("VIRTUAL_ENV", o.Dir)
	path := filepath.Join(o.Dir, "bin")
	if old := vars["PATH"]; old != "" {
		path += ":" + old
	}
	set("PATH", path)
	set("HF_HOME", p.HFHome())
	set("HF_HUB_CACHE", p.Hub())
	set("TORCH_HOME", p.TorchHome())
	set("PYTHONUNBUFFERED", "1")
	caps := capabilities{Generation: o.Generation, Groups: o.Groups, Usable: o.Usable(), Degraded: map[string]string{}, Models: o.Models, GPU: o.GPU}
	var degraded []string
	for _, g := range o.Groups {
		if g.State == bootstrap.GroupDegraded {
			caps.Degraded[g.Name] = g.Reason
			degraded = append(degraded, g.Name+"="+strings.ReplaceAll(g.Reason, ",", ";"))
		}
	}
	sort.Strings(degraded)
	set("VOLBOOT_GROUPS", strings.Join(o.Usable(), ","))
	set("VOLBOOT_DEGRADED", strings.Join(degraded, ","))
	if offline := hfOffline(m.Run.HFOffline, o); offline {
		set("HF_HUB_OFFLINE", "1")
	}
	data, err := json.MarshalIndent(caps, "", "  ")
	if err != nil {
		return nil, err
	}
	capsFile := filepath.Join(tmp, "capabilities.json")
	if err := atomicfile.WriteVolatile(capsFile, data, 0o644); err != nil {
		return nil, err
	}
	set("VOLBOOT_CAPABILITIES", capsFile)
	env := make([]string, 0, len(order))
	for _, k := range order {
		if v, ok := vars[k]; ok {
			env = append(env, k+"="+v)
		}
	}
	return env, nil
}

// hfOffline decides HF_HUB_OFFLINE: always, never, or (auto) when every
// model of the usable groups is present.
func hfOffline(mode string, o *bootstrap.Outcome) bool {
	switch mode {
	case "always":
		return true
	case "never":
		return false
	}
	// The groups whose packages the handler has: a group degraded by its
	// models alone counts, since the handler may fetch them itself.
	linked := map[string]bool{}
	for _, g := range o.Groups {
		linked[g.Name] = g.State == bootstrap.GroupInstalled || (g.State == bootstrap.GroupDegraded && g.PackagesInstalled)
	}
	for _, md := range o.Models {
		if linked[md.Group] && !md.OK {
			return false
		}
	}
	return true
}
