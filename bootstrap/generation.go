package bootstrap

// Building a sync's generation: planning its packages, linking them
// (speculatively while the wheels it lacks still download), its id, and the
// generation directories a dead writer or gc left.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/gpu"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/pylock"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
)

// sharedPerDir is how many operations of the shared scheduler run on one
// directory at once: a store create's write and close overlap the next
// create in its directory (the kernel holds the directory only across
// the create), and a directory of more than one generation batch gets two
// workers.
const sharedPerDir = 2

// build assembles the generation the active groups describe.
func (c *Config) build(ctx context.Context, lk *lockfile.Lock, info *interp.Info, facts *gpu.Facts, plans []*groupPlan, entries map[string]*wheel.Entry, key string) (*Generation, error) {
	gen, pkgs, err := c.prepareBuild(info, facts, plans, entries, nil, key)
	if err != nil {
		return nil, err
	}
	if err := lk.Check(); err != nil {
		return nil, err
	}
	c.Progress.Phase("building generation " + gen.ID)
	lk.SetPhase("building generation " + gen.ID)
	return gen, c.assemble(ctx, info, gen, pkgs)
}

// prepareBuild decides, from the groups alone, the generation's record and
// the packages that make it. A wheel missing from entries is an internal
// error, unless pending gives a way to wait for it.
func (c *Config) prepareBuild(info *interp.Info, facts *gpu.Facts, plans []*groupPlan, entries map[string]*wheel.Entry,
	pending func(sha string) func() (*wheel.Entry, error), key string) (*Generation, []venv.Package, error) {
	type member struct {
		sel       *pylock.Selected
		groups    []string
		requested bool
	}
	members := map[string]*member{}
	for _, p := range plans {
		if !p.linked() {
			continue
		}
		requested := map[string]bool{}
		for _, r := range p.group.Requirements {
			requested[pep508.NormalizeName(r.Name)] = true
		}
		for i := range p.selected {
			s := &p.selected[i]
			key := c.storeKey(s)
			m := members[key]
			if m == nil {
				m = &member{sel: s}
				members[key] = m
			}
			m.groups = append(m.groups, p.group.Name)
			m.requested = m.requested || requested[s.Package.Normalized]
		}
	}
	var records []PackageRecord
	for sha, m := range members {
		if entries[sha] == nil && pending == nil {
			return nil, nil, fmt.Errorf("internal: wheel %s of an active group is not in the store", m.sel.Filename())
		}
		rec := PackageRecord{Name: m.sel.Package.Name, Version: m.sel.Package.Version, SHA256: sha,
			Filename: m.sel.Filename(), Groups: m.groups, Requested: m.requested}
		if m.sel.Sdist != nil {
			rec.Sdist = m.sel.Sdist.SHA256
		}
		records = append(records, rec)
	}
	sort.Slice(records, func(i, j int) bool { return records[i].Name < records[j].Name })
	// Packages in name order: where two wheels ship the same file with the
	// same bytes, the generation links the first one's, and the marker
	// lists them in that order, whatever order the map gave.
	pkgs := make([]venv.Package, len(records))
	for i, r := range records {
		pkgs[i] = venv.Package{Entry: entries[r.SHA256], Requested: r.Requested}
		if pkgs[i].Entry == nil {
			pkgs[i].Pending = pending(r.SHA256)
		}
	}
	groups := c.groupOutcomes(plans)
	id := generationID(info, records, groups)
	gpuJSON, _ := json.Marshal(facts)
	gen := &Generation{ID: id, Created: c.Now().UTC(), Key: key, Manifest: c.Manifest.Digest, Lock: c.Lock.Digest,
		Interpreter: info.Identity(), Python: c.Python, Groups: groups, Packages: records, GPU: gpuJSON}
	return gen, pkgs, nil
}

// groupOutcomes are the groups' outcomes as a generation records them: an
// optional group newly degraded gets its next retry time. A required group
// degraded (by its models: anything else fails the sync) gets none, so
// that every sync tries it again: the worker cannot serve without it.
func (c *Config) groupOutcomes(plans []*groupPlan) []GroupOutcome {
	var groups []GroupOutcome
	for _, p := range plans {
		o := p.outcome
		if o.State == GroupDegraded && o.RetryAfter == nil && !o.Required {
			o.Attempts++
			delay := min(c.RetryBackoff<<min(o.Attempts-1, 5), maxRetryDelay)
			t := c.Now().Add(delay).UTC()
			o.RetryAfter = &t
		}
		groups = append(groups, o)
	}
	return groups
}

// assemble builds gen's directory from pkgs. It reads nothing of the
// groups, so it may run while downloads change them (speculate).
func (c *Config) assemble(ctx context.Context, info *interp.Info, gen *Generation, pkgs []venv.Package) error {
	if err := os.MkdirAll(c.Paths.Envs(), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", c.Paths.Envs(), err)
	}
	if err := c.clearIncomplete(c.Paths.Env(gen.ID)); err != nil {
		return err
	}
	b := &venv.Builder{Python: info, Creator: "volboot", Logger: c.Logger, Sync: c.Durability, Replace: c.replaceGen == gen.ID,
		Trash: c.trash(), Adopt: c.adoptable, Ops: c.ops}
	if _, err := b.Build(ctx, c.Paths.Env(gen.ID), pkgs); err != nil {
		if isNoSpace(err) {
			return fmt.Errorf("build generation %s: the volume is full: %w; free space (volboot gc) or grow the volume, then sync again", gen.ID, err)
		}
		return fmt.Errorf("build generation %s: %w", gen.ID, err)
	}
	return nil
}

// errSpeculationAbandoned ends a speculative build whose groups changed.
var errSpeculationAbandoned = errors.New("speculative build abandoned")

// speculation is a generation built while the wheels it lacks are still
// downloaded and unpacked: every package the store already holds is linked
// at once, and each missing one as soon as the unpack completes its entry
// (deliver). It assumes every active group's wheels arrive; if the groups'
// outcomes change (a download fails, a wheel is refused), the build is
// abandoned and the generation built again without them, as before.
type speculation struct {
	outcomes []GroupOutcome // the groups as the build assumed them
	gen      *Generation
	cancel   context.CancelFunc

	mu      sync.Mutex
	arrived map[string]*wheel.Entry  // entries delivered so far, by store key
	arrival map[string]chan struct{} // closed when the key's entry is delivered

	resolved  chan struct{} // closed once entries and abandoned are set
	entries   map[string]*wheel.Entry
	abandoned bool

	done chan struct{} // closed when the build goroutine returns
	err  error
}

// deliver hands the build a store entry the unpack completed. Safe for
// concurrent use; nil-safe; a key delivered twice keeps the first entry.
func (sp *speculation) deliver(key string, e *wheel.Entry) {
	if sp == nil || e == nil {
		return
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	ch, wanted := sp.arrival[key]
	if !wanted || sp.arrived[key] != nil {
		return
	}
	sp.arrived[key] = e
	close(ch)
}

// heldEntries reads, with many in flight, the store entries already
// complete for wheels (on a network volume each is a round trip).
func heldEntries(store *wheel.Store, wheels map[string]*pylock.Selected) map[string]*wheel.Entry {
	shas := make([]string, 0, len(wheels))
	for sha := range wheels {
		shas = append(shas, sha)
	}
	have, _ := store.OpenAll(shas, nil)
	held := make(map[string]*wheel.Entry, len(shas))
	for i, e := range have {
		if e != nil {
			held[shas[i]] = e
		}
	}
	return held
}

// speculate starts a speculative build when the store lacks (ready) some
// of the wanted wheels of the active groups; it returns nil when it holds
// them all. The caller must call finish, and should deliver each entry the
// unpack completes meanwhile.
func (c *Config) speculate(ctx context.Context, info *interp.Info, facts *gpu.Facts, plans []*groupPlan, ready map[string]*wheel.Entry, wanted map[string]*pylock.Selected, key string) *speculation {
	if len(ready) == len(wanted) {
		return nil
	}
	sp := &speculation{
		resolved: make(chan struct{}), done: make(chan struct{}),
		arrived: map[string]*wheel.Entry{}, arrival: map[string]chan struct{}{},
	}
	for k := range wanted {
		if ready[k] == nil {
			sp.arrival[k] = make(chan struct{})
		}
	}
	for _, p := range plans {
		sp.outcomes = append(sp.outcomes, p.outcome)
	}
	pending := func(sha string) func() (*wheel.Entry, error) {
		return func() (*wheel.Entry, error) {
			select {
			case <-sp.arrival[sha]:
				sp.mu.Lock()
				defer sp.mu.Unlock()
				return sp.arrived[sha], nil
			case <-sp.resolved:
			}
			if sp.abandoned {
				return nil, errSpeculationAbandoned
			}
			if e := sp.entries[sha]; e != nil {
				return e, nil
			}
			return nil, fmt.Errorf("wheel %s is not in the store", sha)
		}
	}
	gen, pkgs, err := c.prepareBuild(info, facts, plans, ready, pending, key)
	if err != nil {
		return nil
	}
	sp.gen = gen
	sctx, cancel := context.WithCancel(ctx)
	sp.cancel = cancel
	go func() {
		defer close(sp.done)
		sp.err = c.assemble(sctx, info, gen, pkgs)
	}()
	return sp
}

// finish hands the speculative build the fetched entries, or abandons it
// when the fetch failed or changed any group's outcome, and waits for it.
// It returns the generation when the speculation held and the build
// succeeded; nil means build it the ordinary way.
func (sp *speculation) finish(entries map[string]*wheel.Entry, fetchErr error, plans []*groupPlan, logger *zap.Logger) *Generation {
	if sp == nil {
		return nil
	}
	sp.entries = entries
	sp.abandoned = fetchErr != nil || len(plans) != len(sp.outcomes)
	for i := 0; !sp.abandoned && i < len(plans); i++ {
		a, b := plans[i].outcome, sp.outcomes[i]
		sp.abandoned = a.State != b.State || a.Reason != b.Reason
	}
	close(sp.resolved)
	if sp.abandoned {
		sp.cancel()
	}
	<-sp.done
	sp.cancel()
	if sp.abandoned || sp.err != nil {
		logger.Debug("speculative build not used", zap.String("generation", sp.gen.ID), zap.Bool("abandoned", sp.abandoned), zap.Error(sp.err))
		return nil
	}
	logger.Debug("speculative build used", zap.String("generation", sp.gen.ID))
	return sp.gen
}

// clearIncomplete moves aside a generation directory that is in place but
// has no marker. Generations are renamed into place complete, so such a
// directory was damaged (its marker deleted, a copy of the volume cut
// short); left there it would make the rebuild's rename fail, and with it
// every sync and repair. A handler still running from it keeps its open
// files; new imports find the rebuilt generation under the same name.
func (c *Config) clearIncomplete(dir string) error {
	if _, err := os.Lstat(dir); err != nil {
		return nil
	}
	if _, err := venv.ReadMarker(dir); err == nil {
		return nil
	}
	if c.restoreMarker(dir) {
		return nil
	}
	if err := c.trash().Put(dir); err != nil {
		return fmt.Errorf("move aside the incomplete generation %s: %w", dir, err)
	}
	c.Logger.Warn("moved an incomplete generation to the trash to rebuild it", zap.String("dir", dir))
	return nil
}

// restoreMarker gives the generation at dir back the marker a gc had set
// aside (see doomGenerations) and never returned, and reports whether the
// generation is complete again. It runs under the volume lock, which that
// gc held while the marker was aside: so the gc is dead or fenced (and a
// fenced gc gives markers back, removing nothing).
func (c *Config) restoreMarker(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		ti, ok := atomicfile.ParseTempName(e.Name())
		if !ok || ti.Final != venv.CompleteName {
			continue
		}
		if os.Rename(filepath.Join(dir, e.Name()), filepath.Join(dir, venv.CompleteName)) != nil {
			continue
		}
		if _, err := venv.ReadMarker(dir); err == nil {
			c.Logger.Warn("gave a generation back the marker a gc that died had set aside", zap.String("dir", dir))
			return true
		}
	}
	return false
}

// generationID hashes everything that determines a generation's content.
func generationID(info *interp.Info, pkgs []PackageRecord, groups []GroupOutcome) string {
	h := sha256.New()
	fmt.Fprintf(h, "volboot-generation %d\ninterpreter %s\n", FormatVersion, info.Identity())
	for _, p := range pkgs {
		fmt.Fprintf(h, "wheel %s %t\n", p.SHA256, p.Requested)
	}
	for _, g := range groups {
		state := g.State
		if g.modelsOnly() {
			// Models are not in the generation: fetching them later must
			// not build the same files again under another id.
			state = GroupInstalled
		}
		fmt.Fprintf(h, "group %s %s\n", g.Name, state)
	}
	return hex.EncodeToString(h.Sum(nil))[:20]
}
