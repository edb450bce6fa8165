package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/models"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/lockfile"
)

// Drift kinds reported by Status.
const (
	DriftNoGeneration    = "no-generation"      // nothing built for this worker yet
	DriftPartial         = "partial-generation" // recorded, but its marker is missing
	DriftManifest        = "manifest-changed"
	DriftLock            = "lock-changed"
	DriftInterpreter     = "interpreter-changed"
	DriftAdded           = "package-added"
	DriftRemoved         = "package-removed"
	DriftChanged         = "package-changed"
	DriftDegraded        = "group-degraded" // a note, not drift, until its retry is due
	DriftRetryDue        = "group-retry-due"
	DriftByHand          = "installed-by-hand"
	DriftLeftover        = "leftover"
	DriftMissingModel    = "model-missing"
	DriftCorrupt         = "corrupt-file"
	DriftStoreIncomplete = "store-entry-missing"
	// DriftGenerationFile: a file of the generation itself (listed by the
	// RECORD of the package's dist-info there, or the interpreter link)
	// is missing, of another kind, or changed, while the store is sound.
	DriftGenerationFile = "generation-file"
	// DriftState: state.json does not parse; repair rewrites it.
	DriftState = "state-damaged"
)

// Drift is one difference between what the manifest asks and what the
// volume holds.
type Drift struct {
	Kind    string `json:"kind"`
	Package string `json:"package,omitempty"`
	Detail  string `json:"detail"`
}

// StatusReport is `volboot status` (DESIGN.md §14).
type StatusReport struct {
	InSync     bool           `json:"in_sync"`
	Generation *string        `json:"generation"`
	Current    string         `json:"current,omitempty"` // what venv points at
	Groups     []GroupOutcome `json:"groups"`
	Drift      []Drift        `json:"drift"`
	// Notes are worth knowing but are not drift, since a sync would not
	// change them: an optional group degraded and waiting for its retry
	// (the volume is as good as it can be until then), a dead writer's
	// leftover.
	Notes []Drift `json:"notes"`
	// State is in-sync, degraded (in sync, with an optional group
	// degraded: see Notes) or drift.
	State    string      `json:"state"`
	Holder   *HolderInfo `json:"lock_holder,omitempty"`
	Verified bool        `json:"verified"`
	// Trash counts the trees waiting in the volume's trash to be removed
	// (not drift: nothing reads them; run and gc empty it).
	Trash int `json:"trash_items,omitempty"`
}

// HolderInfo describes a live writer, if one holds the volume lock.
type HolderInfo struct {
	Host  string `json:"host"`
	PID   int    `json:"pid"`
	Phase string `json:"phase"`
}

// Status compares the manifest and lock with the volume for this worker.
// It never takes the writer lock and writes nothing. verify also hashes
// every installed file against its RECORD, in parallel.
func Status(ctx context.Context, c Config, verify bool) (*StatusReport, error) {
	c.defaults()
	r := &StatusReport{Drift: []Drift{}, Notes: []Drift{}, Groups: []GroupOutcome{}}
	defer r.settle()
	key, err := c.bootKey()
	if err != nil {
		return nil, err
	}
	info, err := interp.Probe(ctx, c.Python, interp.Cache{Dir: c.Paths.InterpCache()}, c.Logger)
	if err != nil {
		return nil, fmt.Errorf("probe interpreter %s: %w", c.Python, err)
	}
	if err := c.checkPair(info); err != nil {
		return nil, err
	}
	st, err := ReadState(c.Paths.State())
	if errors.Is(err, ErrStateDamaged) {
		// Damaged, not unreadable nor newer: drift that repair mends
		// (the sync rewrites the file), not an error of status.
		r.Drift = append(r.Drift, Drift{Kind: DriftState, Detail: err.Error()})
		r.Groups = c.missingGroups()
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	r.Current = st.Current
	if hs, err := lockfile.ReadHolder(c.Paths.Volboot()); err == nil && hs.Holder != nil && !hs.Released && hs.Epoch > 0 {
		r.Holder = &HolderInfo{Host: hs.Holder.Host, PID: hs.Holder.PID, Phase: hs.Holder.Phase}
	}
	r.Drift = append(r.Drift, leftovers(c.Paths)...)
	r.Trash = c.trash().Items()

	var gen *Generation
	if id, ok := st.Keys[key]; ok {
		gen = st.Generations[id]
	}
	if gen == nil {
		// Nothing built for exactly this manifest, lock, interpreter and
		// GPU: explain how the nearest generation differs.
		r.Groups = c.missingGroups()
		if err := c.explainMiss(st, info, r); err != nil {
			return nil, err
		}
		return r, nil
	}
	r.Generation = &gen.ID
	r.Groups = gen.Groups
	marker, err := venv.ReadMarker(c.Paths.Env(gen.ID))
	if err != nil {
		r.Drift = append(r.Drift, Drift{Kind: DriftPartial, Detail: fmt.Sprintf("generation %s is recorded but not complete (%v): run `volboot repair`", gen.ID, err)})
	} else {
		r.Drift = append(r.Drift, c.byHand(gen, marker)...)
	}
	now := c.Now()
	waiting := map[string]bool{} // optional groups whose retry is ahead
	for _, g := range gen.Groups {
		switch {
		case g.State != GroupDegraded:
		case g.RetryAfter != nil && !g.waitingForRetry(now):
			r.Drift = append(r.Drift, Drift{Kind: DriftRetryDue, Detail: fmt.Sprintf("%s: %s; its retry was due at %s: the next sync tries again", g.Name, g.Reason, g.RetryAfter.UTC().Format(time.RFC3339))})
		default:
			detail := g.Name + ": " + g.Reason
			if g.RetryAfter != nil {
				detail += "; the first sync after " + g.RetryAfter.UTC().Format(time.RFC3339) + " tries again (volboot repair now)"
			}
			r.Notes = append(r.Notes, Drift{Kind: DriftDegraded, Detail: detail})
			waiting[g.Name] = !g.Required
		}
	}
	md, _ := c.modelDrift(gen, verify, waiting)
	r.Drift = append(r.Drift, md...)
	if verify {
		r.Verified = true
		r.Drift = append(r.Drift, c.verifyGeneration(ctx, gen)...)
		drift, notes := c.verifyLocal(gen)
		r.Drift = append(r.Drift, drift...)
		r.Notes = append(r.Notes, notes...)
	}
	r.InSync = true // unless settle finds drift
	return r, nil
}

// settle moves leftovers from Drift to Notes and names the state. A report
// is in sync when no sync would change what it reports.
func (r *StatusReport) settle() {
	drift := r.Drift[:0]
	for _, d := range r.Drift {
		if d.Kind == DriftLeftover {
			r.Notes = append(r.Notes, d)
		} else {
			drift = append(drift, d)
		}
	}
	r.Drift = drift
	r.InSync = r.InSync && len(r.Drift) == 0
	r.State = "drift"
	if r.InSync {
		r.State = "in-sync"
		for _, n := range r.Notes {
			if n.Kind == DriftDegraded {
				r.State = "degraded"
			}
		}
	}
}

func (c *Config) missingGroups() []GroupOutcome {
	var out []GroupOutcome
	for _, g := range c.Manifest.Groups {
		out = append(out, GroupOutcome{Name: g.Name, State: GroupMissing, Required: g.Required})
	}
	return out
}

// explainMiss reports why no generation matches this boot, against the
// generation venv points at (or the newest one).
func (c *Config) explainMiss(st *State, info *interp.Info, r *StatusReport) error {
	ref := st.Generations[st.Current]
	if ref == nil {
		if ids := st.GenerationIDs(); len(ids) > 0 {
			ref = st.Generations[ids[0]]
		}
	}
	if ref == nil {
		r.Drift = append(r.Drift, Drift{Kind: DriftNoGeneration, Detail: "nothing installed yet: run `volboot sync`"})
		return nil
	}
	r.Drift = append(r.Drift, Drift{Kind: DriftNoGeneration, Detail: fmt.Sprintf("no generation for this manifest, lock, interpreter and GPU; the nearest is %s", ref.ID)})
	if ref.Manifest != c.Manifest.Digest {
		r.Drift = append(r.Drift, Drift{Kind: DriftManifest, Detail: "the manifest changed since generation " + ref.ID})
	}
	if ref.Lock != c.Lock.Digest {
		r.Drift = append(r.Drift, Drift{Kind: DriftLock, Detail: "the lock changed since generation " + ref.ID})
	}
	if ref.Interpreter != info.Identity() {
		r.Drift = append(r.Drift, Drift{Kind: DriftInterpreter, Detail: fmt.Sprintf("generation %s was built for %s, the interpreter is now %s", ref.ID, ref.Interpreter, info.Identity())})
	}
	// Package-level difference: what the lock selects for every group now
	// versus what the reference generation holds.
	lock, err := c.Lock.Parse()
	if err != nil {
		return err
	}
	want := map[string]PackageRecord{}
	py, err := pep440.Parse(info.Version)
	if err != nil {
		return err
	}
	refGroup := map[string]GroupOutcome{}
	for _, o := range ref.Groups {
		refGroup[o.Name] = o
	}
	for _, g := range c.Manifest.Groups {
		if o := refGroup[g.Name]; (o.State == GroupDegraded && !o.PackagesInstalled) || o.State == GroupSkipped {
			continue // its packages are missing on purpose; the group drift says why
		}
		sel, err := lock.Select(targetFor(info, py, g.Name))
		if err != nil {
			continue // reported by sync as a degraded group
		}
		if _, reason := c.checkSdists(lock, info, py, sel); reason != "" {
			continue // likewise
		}
		for i := range sel {
			s := &sel[i]
			want[s.Package.Normalized] = PackageRecord{Name: s.Package.Name, Version: s.Package.Version, SHA256: c.storeKey(s)}
		}
	}
	have := map[string]PackageRecord{}
	for _, p := range ref.Packages {
		have[pep508.NormalizeName(p.Name)] = p
	}
	for n, w := range want {
		h, ok := have[n]
		switch {
		case !ok:
			r.Drift = append(r.Drift, Drift{Kind: DriftAdded, Package: w.Name, Detail: "wanted " + w.Version})
		case h.SHA256 != w.SHA256:
			r.Drift = append(r.Drift, Drift{Kind: DriftChanged, Package: w.Name, Detail: fmt.Sprintf("%s -> %s", h.Version, w.Version)})
		}
	}
	for n, h := range have {
		if _, ok := want[n]; !ok {
			r.Drift = append(r.Drift, Drift{Kind: DriftRemoved, Package: h.Name, Detail: "installed " + h.Version + ", no longer wanted"})
		}
	}
	sort.SliceStable(r.Drift, func(i, j int) bool { return r.Drift[i].Kind < r.Drift[j].Kind })
	return nil
}

// byHand lists distributions in the generation's site-packages that volboot
// did not install (pip install run by hand into the volume's venv).
func (c *Config) byHand(gen *Generation, marker *venv.Marker) []Drift {
	ours := map[string]bool{}
	for _, p := range marker.Packages {
		ours[pep508.NormalizeName(p.Name)] = true
	}
	dirs, _ := filepath.Glob(filepath.Join(c.Paths.Env(gen.ID), "lib", "python*", "site-packages", "*.dist-info"))
	var out []Drift
	for _, d := range dirs {
		name, _, _ := strings.Cut(strings.TrimSuffix(filepath.Base(d), ".dist-info"), "-")
		if !ours[pep508.NormalizeName(name)] {
			out = append(out, Drift{Kind: DriftByHand, Package: name, Detail: filepath.Base(d) + " was not installed by volboot"})
		}
	}
	return out
}

// leftovers finds temporary names of writers that are gone: same host and
// a pid that no longer runs, or another host's names older than a day.
func leftovers(p Paths) []Drift {
	var out []Drift
	host, _ := os.Hostname()
	host = atomicfile.HostToken(host)
	for _, dir := range []string{p.Root, p.Volboot(), p.Store(), p.Envs(), p.Wheels(), p.Sdists(), p.Packs()} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			ti, ok := atomicfile.ParseTempName(e.Name())
			if !ok {
				continue
			}
			if writerDead(ti, host, e) {
				out = append(out, Drift{Kind: DriftLeftover, Detail: filepath.Join(dir, e.Name()) + " (a dead writer's temporary file)"})
			}
		}
	}
	return out
}

func writerDead(ti atomicfile.TempInfo, host string, e fs.DirEntry) bool {
	if ti.Host == host {
		if ti.PID == os.Getpid() {
			// Our pid: ours, or an earlier process of this host with the
			// same pid (a restarted container's pid 1).
			return !atomicfile.Mine(ti)
		}
		err := syscall.Kill(ti.PID, 0)
		return errors.Is(err, syscall.ESRCH)
	}
	info, err := e.Info()
	return err == nil && time.Since(info.ModTime()) > 24*time.Hour
}

// modelDrift checks, without network, that every model the generation
// recorded is still complete on disk: a few stats per file, each blob's
// size against the recorded one; with verify also every blob's content
// against its name (sha256 or git blob id). A model the sync could not
// fetch is drift unless its group is in waiting (optional groups whose
// retry is still ahead: the group's note says it). It returns the blobs
// whose content does not match, for repair to remove.
func (c *Config) modelDrift(gen *Generation, verify bool, waiting map[string]bool) ([]Drift, []string) {
	var out []Drift
	var bad []string
	for _, rec := range gen.Models {
		if !rec.OK {
			// A model of an optional group waiting for its retry is
			// that group's note: the next sync would not try it.
			if !waiting[rec.Group] {
				out = append(out, Drift{Kind: DriftMissingModel, Package: rec.Repo, Detail: rec.Reason})
			}
			continue
		}
		for _, m := range c.Manifest.Models {
			if m.Repo != rec.Repo || m.Revision != rec.Revision {
				continue
			}
			mm := models.Model{Repo: m.Repo, Revision: m.Revision, RepoType: m.RepoType, Files: m.Files, Group: m.Group}
			snap := &models.Snapshot{Commit: rec.Commit, Files: rec.Files}
			check := models.Check
			if verify {
				check = models.Verify
			}
			if st := check(c.Paths.Hub(), mm, snap); !st.Complete || len(st.BadBlobs) > 0 {
				out = append(out, Drift{Kind: DriftMissingModel, Package: rec.Repo, Detail: strings.Join(st.Problems, "; ")})
				bad = append(bad, st.BadBlobs...)
			}
		}
	}
	return out, bad
}
