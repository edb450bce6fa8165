// Package bootstrap is the reconciler: it turns a manifest, its lock and
// whatever a volume holds into a complete generation (DESIGN.md §2), and
// tells the truth about the result.
//
// Sync's contract:
//   - The in-sync boot is O(1): it stats the interpreter, reads a few sysfs
//     and procfs files for the GPU fingerprint, reads the boot record of
//     that key and one generation marker, and starts no process (rule 6).
//   - Otherwise it probes the interpreter and GPUs, plans without the lock,
//     takes the volume lock, looks again (another worker may have finished),
//     then fetches, unpacks, builds, smoke-checks, flips `venv` and records
//     state. Every step leaves only complete, content-named results, so a
//     worker killed at any moment costs the next one nothing but time.
//   - An optional group that fails (no wheel, download, unpack, import) is
//     degraded with its reason and the generation holds everything else; a
//     required group that fails makes Sync return a *GroupError after
//     everything else is safely stored.
//   - Losing the lock to another worker (fencing) restarts the attempt.
package bootstrap

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/gpu"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/locallayout"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pylock"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
	"github.com/volboot/volboot/manifests"
)

// FormatVersion is volboot's environment format: part of every generation
// id, so a volboot that lays generations out differently builds new ones.
const FormatVersion = 1

// Config is everything Sync needs; nothing is read from globals.
type Config struct {
	Paths    Paths
	Manifest *manifests.Manifest
	Lock     *LockSource
	Python   string // the interpreter as configured (--python)
	Jobs     int
	Logger   *zap.Logger
	Getenv   func(string) string
	Now      func() time.Time

	HTTP        *http.Client
	Credentials *fetch.Credentials
	VolumeSize  int64 // quota override for the disk preflight; 0: statfs
	// Durability is how store entries and generations are made durable
	// before they count as complete (default wheel.SyncAuto).
	Durability wheel.SyncMode

	LockMode    lockfile.Mode
	LockTimeout time.Duration
	// LockTTL is how long a holder record may stay unchanged before
	// waiters take over (lockfile.Options.TTL; 0: lockfile.DefaultTTL).
	LockTTL time.Duration

	// replaceGen is the generation repair found damaged: the build makes
	// it again and swaps it in even though its marker is there.
	replaceGen string
	// builds is this sync's build environment of sdists, once a group
	// selects one (build.go).
	builds *buildEnv
	// ops schedules this sync's file operations on the volume: the store
	// and the generation builder share it, so that a speculative build
	// running beside the unpack respects the same bound (fileops).
	ops *fileops.Scheduler

	// GPU configures the GPU probe (fake roots and overrides in tests).
	GPU gpu.Options

	// SmokeTimeout bounds each smoke import (default 2 min: torch's first
	// import on a cold network filesystem is slow).
	SmokeTimeout time.Duration
	// RetryBackoff is the first delay before sync retries a degraded group
	// (default 1 h, doubling per attempt up to a day).
	RetryBackoff time.Duration
	// Repair retries degraded groups now and rebuilds even when state says
	// the generation is complete.
	Repair bool

	// Local configures the local layout (local.go); its zero value is
	// the volume layout.
	Local LocalLayout

	// Progress receives phases and byte counts; nil: none.
	Progress Progress
	// Terminal selects progress bars on ProgressOut instead of log lines.
	Terminal    bool
	ProgressOut io.Writer
}

// Progress receives what the bootstrap is doing, for /status and the lock
// holder's phase. Calls come from one goroutine at a time.
type Progress interface {
	Phase(text string)
	Bytes(done, total int64)
	Packages(done, total int)
	// Unpacked counts bytes of wheels unpacked into the store, of those
	// this sync unpacks: the init budget's projection of a slow volume.
	Unpacked(done, total int64)
}

// Outcome is what a sync produced: the generation this worker runs.
type Outcome struct {
	Generation string
	Dir        string // absolute path of the generation the handler runs from (local tree or volume)
	Python     string // the generation's interpreter
	// VolumeDir is the generation on the volume (Dir too, in the volume
	// layout).
	VolumeDir string
	// Layout is "volume" or "local" (set by Localize).
	Layout string
	// Pack is the generation's pack, nil when it has none.
	Pack     *locallayout.PackRecord
	Groups   []GroupOutcome
	Models   []ModelRecord
	GPU      json.RawMessage
	FastPath bool
}

// StillComplete reads the generation's marker again. A worker that holds a
// use-lease on the generation calls it after writing the lease: gc takes
// the marker before its last look at the leases, so a marker still there
// means gc will keep the generation (see GC).
func (o *Outcome) StillComplete() error {
	_, err := venv.ReadMarker(o.VolumeDir)
	return err
}

// Usable lists the groups the handler can use.
func (o *Outcome) Usable() []string {
	var out []string
	for _, g := range o.Groups {
		if g.State == GroupInstalled {
			out = append(out, g.Name)
		}
	}
	return out
}

// GroupError is a required group that failed.
type GroupError struct {
	Group   string
	Package string
	Cause   string
}

func (e *GroupError) Error() string {
	if e.Package != "" {
		return fmt.Sprintf("required group %s failed: %s: %s", e.Group, e.Package, e.Cause)
	}
	return fmt.Sprintf("required group %s failed: %s", e.Group, e.Cause)
}

// ModelsError is a required group whose packages are installed but a model
// of which could not be fetched. Sync returns it together with the
// Outcome: the generation is complete and recorded, and the next sync
// tries the models again. `volboot sync` fails with it; `volboot run`
// starts the handler all the same (DESIGN.md §11).
type ModelsError struct {
	Generation string
	Groups     []GroupOutcome // the required groups missing models
}

func (e *ModelsError) Error() string {
	var parts []string
	for _, g := range e.Groups {
		parts = append(parts, fmt.Sprintf("required group %s is missing models: %s", g.Name, g.Reason))
	}
	return strings.Join(parts, "; ") + fmt.Sprintf(" (its packages are installed in generation %s; the next sync fetches the models again)", e.Generation)
}

// missingModels is the ModelsError of o, or nil.
func missingModels(o *Outcome) error {
	var missing []GroupOutcome
	for _, g := range o.Groups {
		if g.Required && g.modelsOnly() {
			missing = append(missing, g)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return &ModelsError{Generation: o.Generation, Groups: missing}
}

func (c *Config) defaults() {
	if c.Jobs <= 0 {
		c.Jobs = 16
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.SmokeTimeout <= 0 {
		c.SmokeTimeout = 2 * time.Minute
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = time.Hour
	}
	if c.Progress == nil {
		c.Progress = nopProgress{}
	}
}

type nopProgress struct{}

func (nopProgress) Phase(string)          {}
func (nopProgress) Bytes(int64, int64)    {}
func (nopProgress) Packages(int, int)     {}
func (nopProgress) Unpacked(int64, int64) {}

// Sync brings the volume in sync for this worker and returns the generation
// it runs.
func Sync(ctx context.Context, c Config) (*Outcome, error) {
	c.defaults()
	key, err := c.bootKey()
	if err != nil {
		return nil, err
	}
	if o := c.fastPath(key); o != nil {
		return o, nil
	}
	c.Progress.Phase("probing")
	info, err := interp.Probe(ctx, c.Python, interp.Cache{Dir: c.Paths.InterpCache(), Write: true}, c.Logger)
	if err != nil {
		return nil, fmt.Errorf("probe interpreter %s: %w", c.Python, err)
	}
	if err := c.checkPair(info); err != nil {
		return nil, err
	}
	facts, err := gpu.Probe(ctx, c.GPU)
	if err != nil {
		return nil, fmt.Errorf("probe GPUs: %w", err)
	}
	for attempt := 1; ; attempt++ {
		o, err := c.underLock(ctx, key, info, facts)
		if errors.Is(err, lockfile.ErrFenced) && attempt < 3 && ctx.Err() == nil {
			c.Logger.Warn("lost the volume lock to another worker; starting over", zap.Error(err))
			continue
		}
		return o, err
	}
}

// bootKey fingerprints what decides this boot's generation without starting
// a process: the manifest, the lock, the interpreter (stat) and the GPUs.
func (c *Config) bootKey() (string, error) {
	py, err := exec.LookPath(c.Python)
	if err != nil {
		return "", fmt.Errorf("interpreter %q: %w (set --python or VOLBOOT_PYTHON)", c.Python, err)
	}
	fi, err := os.Stat(py)
	if err != nil {
		return "", fmt.Errorf("interpreter %s: %w", py, err)
	}
	gfp, err := gpu.Fingerprint(c.GPU)
	if err != nil {
		return "", fmt.Errorf("GPU fingerprint: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "volboot-key %d\nmanifest %s\nlock %s\npython %s %s %d %d\ngpu %s\n",
		FormatVersion, c.Manifest.Digest, c.Lock.Digest, c.Python, py, fi.Size(), fi.ModTime().UnixNano(), gfp)
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// readState reads state.json; one that cannot be read is treated as empty
// (it is an index, rebuilt by this sync) with a warning.
func (c *Config) readState() *State {
	st, err := ReadState(c.Paths.State())
	if err != nil {
		c.Logger.Warn("ignoring unreadable state; it will be rewritten", zap.Error(err))
		return newState()
	}
	return st
}

// fastPath returns the outcome when the boot record of key names a
// complete generation with no degraded group due for a retry. It reads two
// small files, whatever the volume's history (state.json grows with every
// generation; the boot record does not).
func (c *Config) fastPath(key string) *Outcome {
	if c.Repair {
		return nil
	}
	g, err := readBootRecord(c.Paths.BootRecord(key))
	if err != nil {
		return nil
	}
	if g.dueForRetry(c.Now()) {
		return nil
	}
	if _, err := venv.ReadMarker(c.Paths.Env(g.ID)); err != nil {
		return nil
	}
	if g.Pack == nil && c.Local.wantPack(c.Paths.Root) {
		return nil // a generation built before packs: the sync packs it
	}
	return c.outcome(g, true)
}

func (c *Config) outcome(g *Generation, fast bool) *Outcome {
	dir := c.Paths.Env(g.ID)
	return &Outcome{
		Generation: g.ID, Dir: dir, Python: filepath.Join(dir, "bin", "python"), VolumeDir: dir, Layout: "volume", Pack: g.Pack,
		Groups: g.Groups, Models: g.Models, GPU: g.GPU, FastPath: fast,
	}
}

func (c *Config) underLock(ctx context.Context, key string, info *interp.Info, facts *gpu.Facts) (*Outcome, error) {
	c.Progress.Phase("waiting for the volume lock")
	lk, err := lockfile.Acquire(ctx, lockfile.Options{
		Dir: c.Paths.Volboot(), Logger: c.Logger, Mode: c.LockMode,
		WaitTimeout: c.LockTimeout, TTL: c.LockTTL, Phase: "planning",
	})
	if err != nil {
		return nil, fmt.Errorf("volume lock: %w", err)
	}
	var o *Outcome
	if c.Repair {
		err = c.repairVolume(ctx, lk, key)
	} else {
		c.setAsideLeftovers()
	}
	if err == nil {
		o, err = c.apply(ctx, lk, key, info, facts)
	}
	if rerr := lk.Release(); rerr != nil && err == nil {
		if errors.Is(rerr, lockfile.ErrFenced) {
			return nil, rerr
		}
		c.Logger.Warn("releasing the volume lock", zap.Error(rerr))
	}
	return o, err
}

// groupPlan is one manifest group's fate while applying.
type groupPlan struct {
	group    *manifests.Group
	outcome  GroupOutcome
	selected []pylock.Selected
}

func (p *groupPlan) active() bool { return p.outcome.State == GroupInstalled }

// linked reports whether the group's packages go into the generation: it
// is installed, or degraded by its models alone.
func (p *groupPlan) linked() bool { return p.active() || p.outcome.modelsOnly() }

// fail marks the group failed: degraded when optional; the error is kept
// for a required one. A package's failure outranks a model's: the group's
// packages then leave the generation too.
func (p *groupPlan) fail(pkg, reason string) {
	if !p.linked() {
		return
	}
	p.outcome.State = GroupDegraded
	p.outcome.PackagesInstalled = false
	if pkg != "" {
		reason = pkg + ": " + reason
	}
	p.outcome.Reason = reason
}

// failModel marks the group degraded by a model it could not fetch. Its
// packages stay in the generation (DESIGN.md §11): model weights are data
// a handler may still fetch itself, or must report missing, and a hub
// that is down must not take the package environment with it.
func (p *groupPlan) failModel(repo, reason string) {
	if !p.active() {
		return
	}
	p.fail("model "+repo, reason)
	p.outcome.PackagesInstalled = true
}

func (c *Config) apply(ctx context.Context, lk *lockfile.Lock, key string, info *interp.Info, facts *gpu.Facts) (*Outcome, error) {
	started := c.Now()
	if o := c.fastPath(key); o != nil {
		c.Logger.Info("another worker finished this generation while we waited", zap.String("generation", o.Generation))
		return o, nil
	}
	st := c.readState()
	var previous *Generation
	if id, ok := st.Keys[key]; ok {
		previous = st.Generations[id]
	}
	if previous == nil {
		// The boot key can change while nothing that matters does (a
		// python whose mtime was touched): the retry back-off of degraded
		// groups still applies then.
		previous = st.similar(c.Manifest.Digest, c.Lock.Digest, info.Identity())
	}
	c.builds = nil
	plans, err := c.planGroups(info, facts, previous)
	if err != nil {
		return nil, err
	}

	// Fetch and unpack every wheel an active group selected.
	// Store and Builder choose how many file operations to keep in flight
	// from the filesystem (dozens on a network filesystem, rule 7); --jobs
	// sizes downloads and smoke checks.
	c.ops = fileops.New(fileops.DefaultJobs(c.Paths.Store()), sharedPerDir)
	store := &wheel.Store{
		Dir: c.Paths.Store(), Logger: c.Logger, Sync: c.Durability, Trash: c.trash(), Adopt: c.adoptable, Ops: c.ops,
		Compiler: &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag, Workers: runtime.NumCPU()},
	}
	wheels := map[string]*pylock.Selected{} // sha256 -> wheel
	users := map[string][]*groupPlan{}      // sha256 -> groups needing it
	for _, p := range plans {
		if !p.linked() {
			continue
		}
		for i := range p.selected {
			s := &p.selected[i]
			key := c.storeKey(s)
			wheels[key] = s
			users[key] = append(users[key], p)
		}
	}
	failWheel := func(sha, reason string) {
		for _, p := range users[sha] {
			p.fail(wheels[sha].Package.Name+" "+wheels[sha].Package.Version, reason)
		}
	}
	fetcher := c.fetcher(lk)
	held := heldEntries(store, wheels)
	spec := c.speculate(ctx, info, facts, plans, held, wheels, key)
	modelFetch := c.startModels(ctx, lk, fetcher, plans)
	entries, downloaded, err := c.fetchAndUnpack(ctx, lk, info, fetcher, store, wheels, held, failWheel, spec.deliver)
	if err != nil {
		modelFetch.cancel()
	}
	specGen := spec.finish(entries, err, plans, c.Logger)
	modelRecords, merr := modelFetch.wait(ctx, lk, c.Progress, plans)
	if err != nil {
		return nil, err
	}
	if merr != nil {
		return nil, merr
	}

	// Build, smoke-check, and rebuild without any group the check degrades.
	var gen *Generation
	for round := 0; ; round++ {
		if err := requiredFailure(plans); err != nil {
			return nil, err
		}
		if round == 0 && specGen != nil {
			gen = specGen
		} else if gen, err = c.build(ctx, lk, info, facts, plans, entries, key); err != nil {
			return nil, err
		}
		gen.Models = modelRecords
		degraded, err := c.smoke(ctx, lk, info, gen, plans, entries, func() (string, func(), error) {
			return c.smokePython(ctx, lk, info, gen, st.Generations[gen.ID], entries)
		})
		if err != nil {
			return nil, err
		}
		if !degraded || round > len(plans) {
			break
		}
	}
	if err := requiredFailure(plans); err != nil {
		return nil, err
	}
	// The speculative build recorded the groups before the models were
	// fetched.
	gen.Groups = c.groupOutcomes(plans)
	if gen.Pack == nil {
		if err := c.ensurePack(ctx, lk, info, gen, st.Generations[gen.ID], entries); err != nil {
			return nil, err
		}
	}

	// Record: flip venv, then state. Only while we still hold the lock.
	if err := lk.Check(); err != nil {
		return nil, err
	}
	if err := flipVenv(c.Paths, gen.ID); err != nil {
		return nil, err
	}
	st = c.readState()
	st.Keys[key] = gen.ID
	st.Generations[gen.ID] = gen
	st.Current = gen.ID
	host, _ := os.Hostname()
	st.LastSync = &SyncReport{Generation: gen.ID, Started: started, Duration: c.Now().Sub(started), Downloaded: downloaded, Unpacked: len(entries), Host: host}
	if err := lk.Check(); err != nil {
		return nil, err
	}
	if err := st.Write(c.Paths.State()); err != nil {
		return nil, fmt.Errorf("record state: %w", err)
	}
	if err := writeBootRecord(c.Paths.BootRecord(key), gen); err != nil {
		return nil, fmt.Errorf("record state: %w", err)
	}
	c.Logger.Info("generation ready", zap.String("generation", gen.ID), zap.Strings("usable", c.outcome(gen, false).Usable()),
		zap.Duration("took", c.Now().Sub(started)))
	c.trashUnwanted()
	o := c.outcome(gen, false)
	if err := missingModels(o); err != nil {
		return o, err
	}
	return o, nil
}

// planGroups decides each group's fate before any download: unmet `when`
// conditions skip it; a group degraded by an earlier sync stays degraded
// until its retry time (unless repairing); a lock that has no wheel for it
// fails it.
func (c *Config) planGroups(info *interp.Info, facts *gpu.Facts, previous *Generation) ([]*groupPlan, error) {
	pyVersion, err := pep440.Parse(info.Version)
	if err != nil {
		return nil, fmt.Errorf("interpreter version %q: %w", info.Version, err)
	}
	if !c.Manifest.Python.Requires.ContainsPrereleases(pyVersion, true) {
		return nil, &InputError{fmt.Errorf("%s: the manifest requires Python %s, but %s is %s: point --python at a matching interpreter",
			c.Manifest.Where("python.requires"), c.Manifest.Python.Requires, c.Python, info.Version)}
	}
	lock, err := c.Lock.Parse()
	if err != nil {
		return nil, err
	}
	prev := map[string]GroupOutcome{}
	if previous != nil {
		for _, o := range previous.Groups {
			prev[o.Name] = o
		}
	}
	var plans []*groupPlan
	for i := range c.Manifest.Groups {
		g := &c.Manifest.Groups[i]
		p := &groupPlan{group: g, outcome: GroupOutcome{Name: g.Name, State: GroupInstalled, Required: g.Required}}
		plans = append(plans, p)
		for _, cond := range g.When {
			if ok, reason := gpu.Holds(facts, cond.Fact, cond.Constraint, cond.Text); !ok {
				p.outcome.State, p.outcome.Reason = GroupSkipped, reason
				break
			}
		}
		if !p.active() {
			continue
		}
		if po, ok := prev[g.Name]; ok && po.State == GroupDegraded && !g.Required {
			p.outcome.Attempts = po.Attempts
			if !c.Repair && po.waitingForRetry(c.Now()) {
				p.outcome = po
				if !po.modelsOnly() {
					continue
				}
				// Its models wait for their retry; its packages are
				// selected as ever.
			}
		}
		sel, err := lock.Select(targetFor(info, pyVersion, g.Name))
		if err != nil {
			p.fail("", err.Error())
			continue
		}
		if pkg, reason := c.checkSdists(lock, info, pyVersion, sel); reason != "" {
			p.fail(pkg, reason)
			continue
		}
		p.selected = sel
	}
	return plans, nil
}

// requiredFailure is the error for the first failed required group.
func requiredFailure(plans []*groupPlan) error {
	for _, p := range plans {
		if p.group.Required && p.outcome.State == GroupDegraded && !p.outcome.modelsOnly() {
			pkg, cause, _ := strings.Cut(p.outcome.Reason, ": ")
			if cause == "" {
				pkg, cause = "", p.outcome.Reason
			}
			return &GroupError{Group: p.group.Name, Package: pkg, Cause: cause}
		}
	}
	return nil
}

// flipVenv points <volume>/venv at generation id with a relative link,
// replaced atomically.
func flipVenv(p Paths, id string) error {
	link := p.Venv()
	tmp := atomicfile.TempName(link)
	if err := os.Symlink(filepath.Join(".volboot", "envs", id), tmp); err != nil {
		return fmt.Errorf("flip venv: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("flip venv: %w", err)
	}
	return atomicfile.SyncDir(p.Root)
}
