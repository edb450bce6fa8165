package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/locallayout"
	"github.com/volboot/volboot/bootstrap/pack"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
)

// LocalLayout is how a worker lays its generation out (DESIGN.md §5.8).
// The zero value is the volume layout.
type LocalLayout struct {
	Mode locallayout.Mode // volume, local or auto; "" is volume
	// Dir holds local trees, on the container's disk (--local-dir).
	Dir string
	// Budget is the most bytes a local tree may take; 0: the free space
	// of Dir's filesystem less locallayout.Reserve.
	Budget int64
}

// DriftLocalTree: the local tree of the generation differs from its pack
// (status --verify; repair removes it, and the next run lays it out
// again).
const DriftLocalTree = "local-tree"

// DriftPack: the generation's pack is missing or damaged (status
// --verify; repair packs the generation again).
const DriftPack = "pack"

// wantPack says whether this worker's fast path needs the generation's
// pack: in the local layout, and in auto where the volume is a network
// filesystem.
func (l LocalLayout) wantPack(volume string) bool {
	if l.Mode == "" || l.Mode == locallayout.ModeVolume {
		return false
	}
	want, _ := locallayout.WantLocal(l.Mode, volume)
	return want
}

// ensurePack gives gen its pack, under the volume lock, after the
// generation is built and smoke-checked: the pack prev (the generation's
// record from an earlier sync) names when its file is there with its
// size, else, when this worker's layout wants local trees (local, or auto
// on a network volume: every worker on RunPod's MooseFS), a new one
// packed from the store. A worker that wants local trees and finds a
// generation without a pack misses the fast path and packs it here, so
// a volume-layout fleet, and volumes on local disk, never pay for packs.
// A pack that cannot be written is a warning: the generation still runs
// from the volume. Repair
// keeps a pack that is there (it removes a damaged one first): a store
// entry unpacked again has new bytecode and source mtimes, but the pack's
// are consistent among themselves, and a new pack would make every local
// tree lay itself out again.
func (c *Config) ensurePack(ctx context.Context, lk *lockfile.Lock, info *interp.Info, gen *Generation, prev *Generation, entries map[string]*wheel.Entry) error {
	if prev != nil && prev.Pack != nil {
		if fi, err := os.Stat(c.Paths.Pack(gen.ID, prev.Pack.SHA256)); err == nil && fi.Size() == prev.Pack.Size {
			gen.Pack = prev.Pack
			return nil
		}
	}
	if !c.Local.wantPack(c.Paths.Root) {
		return nil
	}
	if err := lk.Check(); err != nil {
		return err
	}
	c.Progress.Phase("packing generation " + gen.ID)
	lk.SetPhase("packing generation " + gen.ID)
	rec, err := c.buildPack(ctx, info, gen, entries)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := lk.Err(); err != nil {
			return err
		}
		c.Logger.Warn("could not pack the generation: workers run it from the volume until a sync packs it", zap.String("generation", gen.ID), zap.Error(err))
		return nil
	}
	gen.Pack = rec
	return nil
}

// smokePython chooses where the smoke check imports from. A worker that
// will run the generation from a local tree (local layout, or auto on a
// network volume, with a local directory) packs the generation now rather
// than after the check, lays its tree out, and smoke-checks from it: the
// same bytes at the same relative paths (small files from the pack, big
// ones linked to the store), imported in seconds where the volume costs
// round trips per module (the real F5 stack's ten imports took 1.5-2
// minutes on the MooseFS rig at 2 ms, one timing out). The tree is then
// reused by the handler. Every other worker, and any failure to pack or
// lay out, imports from the generation on the volume. release ends the
// tree's lease once the check is done; err is a cancelled ctx or a lost
// lock only.
func (c *Config) smokePython(ctx context.Context, lk *lockfile.Lock, info *interp.Info, gen, prev *Generation, entries map[string]*wheel.Entry) (python string, release func(), err error) {
	python, release = filepath.Join(c.Paths.Env(gen.ID), "bin", "python"), func() {}
	if c.Local.Dir == "" || !c.Local.wantPack(c.Paths.Root) {
		return python, release, nil
	}
	if gen.Pack == nil {
		if err := c.ensurePack(ctx, lk, info, gen, prev, entries); err != nil {
			return "", release, err
		}
	}
	if gen.Pack == nil {
		return python, release, nil
	}
	lo, lease, err := c.Localize(ctx, &Outcome{Generation: gen.ID, Pack: gen.Pack})
	if err != nil {
		return "", release, err
	}
	if lease == nil {
		return python, release, nil
	}
	c.Logger.Info("smoke check from the local tree", zap.String("generation", gen.ID), zap.String("dir", lo.Dir))
	return lo.Python, func() { lease.Close() }, nil
}

// planFiles works out every file of gen and where it comes from, exactly
// as building it does (venv.Builder.Files), without touching the tree on
// the volume; the pack and the smoke records both start from it.
func (c *Config) planFiles(info *interp.Info, gen *Generation, entries map[string]*wheel.Entry) ([]venv.PlannedFile, venv.Layout, error) {
	pkgs := make([]venv.Package, len(gen.Packages))
	for i, p := range gen.Packages {
		e := entries[p.SHA256]
		if e == nil {
			return nil, venv.Layout{}, fmt.Errorf("internal: wheel %s of generation %s is not in the store", p.Filename, gen.ID)
		}
		pkgs[i] = venv.Package{Entry: e, Requested: p.Requested}
	}
	b := &venv.Builder{Python: info, Creator: "volboot", Logger: c.Logger}
	files, err := b.Files(pkgs)
	if err != nil {
		return nil, venv.Layout{}, err
	}
	l, err := venv.LayoutFor(info)
	if err != nil {
		return nil, venv.Layout{}, err
	}
	return files, l, nil
}

// buildPack packs gen's small files from the store, as the generation's
// plan places them.
func (c *Config) buildPack(ctx context.Context, info *interp.Info, gen *Generation, entries map[string]*wheel.Entry) (*locallayout.PackRecord, error) {
	files, l, err := c.planFiles(info, gen, entries)
	if err != nil {
		return nil, err
	}
	root, err := filepath.Abs(c.Paths.Root)
	if err != nil {
		return nil, err
	}
	// A killed builder's frames are taken over as the store's and the
	// generations' staging directories are (c.adoptable), except by
	// repair: they were read from the store it is repairing.
	adopt := c.adoptable
	if c.Repair {
		adopt = nil
	}
	for i := range files {
		if files[i].Source != "" && !filepath.IsAbs(files[i].Source) {
			if files[i].Source, err = filepath.Abs(files[i].Source); err != nil {
				return nil, err
			}
		}
	}
	return locallayout.BuildPack(ctx, locallayout.PackOptions{
		Volume: root, Dir: c.Paths.Packs(), Generation: gen.ID,
		Skeleton: func(dir string) error {
			_, err := venv.WriteSkeleton(dir, info, "", "volboot")
			return err
		},
		Files: files, Scripts: filepath.ToSlash(l.Scripts), Jobs: fileops.DefaultJobs(c.Paths.Volboot()), Logger: c.Logger,
		Adopt: adopt, Trash: c.trash(),
	})
}

// Localize lays the generation of o out in the local layout when this
// worker's layout asks for it (auto: a network or FUSE volume), and
// returns the outcome to run the handler from: o itself in the volume
// layout, else a copy whose Dir and Python are the local tree's, with the
// local tree's Lease (nil in the volume layout). The caller must hold the
// generation's use-lease first, since the local tree's links point at
// store files on the volume, and must hold the Lease for as long as
// anything runs from the tree (the in-use rule, DESIGN.md §5.8), then
// close it. Every reason not to run locally (the volume layout chosen, no
// pack, the budget too small, a pack or volume file that fails its
// checks, a tree of another pack that another process still runs from)
// is logged and the volume layout used; only a cancelled ctx is an error.
func (c Config) Localize(ctx context.Context, o *Outcome) (*Outcome, *locallayout.Lease, error) {
	c.defaults()
	mode := c.Local.Mode
	if mode == "" {
		mode = locallayout.ModeVolume
	}
	want, why := locallayout.WantLocal(mode, c.Paths.Root)
	volume := func(msg string, fields ...zap.Field) (*Outcome, *locallayout.Lease, error) {
		level := c.Logger.Info
		if mode == locallayout.ModeLocal {
			level = c.Logger.Warn
		}
		level("layout volume: "+msg, append(fields, zap.String("generation", o.Generation))...)
		return o, nil, nil
	}
	if !want {
		return volume(why)
	}
	if o.Pack == nil {
		return volume("the generation has no pack on the volume (a sync packs it)")
	}
	if c.Local.Dir == "" {
		return volume("no --local-dir")
	}
	budget := c.Local.Budget
	if budget <= 0 {
		var err error
		if budget, err = locallayout.DefaultBudget(c.Local.Dir); err != nil {
			return volume("the local budget is unknown", zap.Error(err))
		}
	}
	root, err := filepath.Abs(c.Paths.Root)
	if err != nil {
		return volume("the volume's path", zap.Error(err))
	}
	res, err := locallayout.Materialize(ctx, locallayout.Options{
		LocalDir: c.Local.Dir, Volume: root, Generation: o.Generation,
		PackPath: c.Paths.Pack(o.Generation, o.Pack.SHA256), Pack: *o.Pack, Budget: budget, Logger: c.Logger,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return volume("the local tree could not be made", zap.Error(err))
	}
	how := "laid out from its pack"
	if res.Reused {
		how = "reused"
	}
	c.Logger.Info(fmt.Sprintf("layout local: %s; local tree %s (%d files, %d MiB, %d links to the volume)", why, how, res.Marker.Files, res.Marker.Bytes>>20, res.Marker.Links),
		zap.String("generation", o.Generation), zap.String("dir", res.Dir), zap.Bool("reused", res.Reused), zap.Duration("took", res.Took))
	lo := *o
	lo.Dir, lo.Python, lo.Layout = res.Dir, filepath.Join(res.Dir, "bin", "python"), "local"
	return &lo, res.Lease, nil
}

// verifyLocal checks, for status --verify, the generation's pack (its
// bytes against its sha256) and, when this worker has a local tree of
// the generation, that tree against the pack. A tree the next run would
// lay out again anyway (made from another pack, before a reboot, for the
// volume at another path) is a note, not drift.
func (c *Config) verifyLocal(gen *Generation) (drift, notes []Drift) {
	if gen.Pack == nil {
		return nil, nil
	}
	path := c.Paths.Pack(gen.ID, gen.Pack.SHA256)
	if err := readPack(path, gen.Pack.SHA256); err != nil {
		return []Drift{{Kind: DriftPack, Detail: err.Error() + ": run `volboot repair`"}}, nil
	}
	if c.Local.Dir == "" {
		return nil, nil
	}
	dir := locallayout.Dir(c.Local.Dir, gen.ID)
	if _, err := os.Lstat(dir); err != nil {
		return nil, nil
	}
	root, _ := filepath.Abs(c.Paths.Root)
	o := locallayout.Options{Volume: root, Generation: gen.ID, PackPath: path, Pack: *gen.Pack}
	if why := locallayout.Stale(dir, o); why != "" {
		return nil, []Drift{{Kind: DriftLocalTree, Detail: fmt.Sprintf("local tree %s: %s; the next run lays it out again", dir, why)}}
	}
	problems, err := locallayout.Verify(dir, o)
	if err != nil {
		return []Drift{{Kind: DriftLocalTree, Detail: err.Error()}}, nil
	}
	var out []Drift
	for _, p := range problems {
		out = append(out, Drift{Kind: DriftLocalTree, Detail: p + " (volboot repair removes the local tree; the next run lays it out again)"})
	}
	return out, nil
}

// readPack reads the pack at path to its end, checking its sha256.
func readPack(path, sha string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := pack.NewReader(f, path, sha)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		if _, err := r.Next(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// repairLocal, under the volume lock during repair, sets the pack aside
// when it is damaged (the sync that follows packs the generation again)
// and removes this worker's local tree of the generation when it differs
// from its pack (the next run lays it out again).
func (c *Config) repairLocal(ctx context.Context, gen *Generation) {
	drift, _ := c.verifyLocal(gen)
	for _, d := range drift {
		c.Logger.Warn("repair: found", zap.String("kind", d.Kind), zap.String("detail", d.Detail))
		switch d.Kind {
		case DriftPack:
			os.Remove(c.Paths.Pack(gen.ID, gen.Pack.SHA256))
		case DriftLocalTree:
			// Into the local trash, unless a process of this container runs
			// from it: removing it would break that process, and the tree
			// is made again only once nothing runs from it.
			dir := locallayout.Dir(c.Local.Dir, gen.ID)
			if err := locallayout.Retire(ctx, c.Local.Dir, dir); err != nil {
				c.Logger.Warn("repair: could not remove the local tree (stop the workers of this container that run from it, then repair again)", zap.String("dir", dir), zap.Error(err))
			}
			return
		}
	}
}

// CollectLocal removes the local trees of this worker's local directory
// that no process runs from, except keep's, and empties the local trash
// (locallayout.Collect: bounded, cancelled with ctx, safe against the
// trees other processes of the container hold). run calls it once the
// handler is ready, keeping its own generation; gc calls it with the
// generations it kept on the volume, and thisVolume set: then only trees
// made for this volume are judged; gc --dry-run sets dryRun, and then
// nothing is removed. Without a local directory it does nothing.
func (c Config) CollectLocal(ctx context.Context, thisVolume, dryRun bool, keep ...string) (locallayout.CollectReport, error) {
	c.defaults()
	if c.Local.Dir == "" {
		return locallayout.CollectReport{}, nil
	}
	o := locallayout.CollectOptions{
		LocalDir: c.Local.Dir, Logger: c.Logger, DryRun: dryRun,
		Keep: func(id string) bool { return slices.Contains(keep, id) },
	}
	if thisVolume {
		root, err := filepath.Abs(c.Paths.Root)
		if err != nil {
			return locallayout.CollectReport{}, err
		}
		o.Volume = root
	}
	return locallayout.Collect(ctx, o)
}
