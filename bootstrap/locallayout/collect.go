package locallayout

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/trash"
)

// CollectOptions says which local trees Collect may remove.
type CollectOptions struct {
	LocalDir string
	// Keep names generations whose trees stay even when no process runs
	// from them (the generation this worker boots: its next boot reuses
	// the tree). Nil keeps none.
	Keep func(generation string) bool
	// Volume, when set, limits Collect to trees made for the volume at
	// this path (their marker says so) and trees without a marker: Keep
	// then speaks for that volume only (gc), and a tree another volume's
	// workers made on this disk is theirs to judge.
	Volume string
	// DryRun removes nothing: the report says what Collect would remove
	// (a tree some process holds a lease on at that moment is InUse).
	DryRun bool
	Logger *zap.Logger
}

// CollectReport says what one Collect did.
type CollectReport struct {
	DryRun    bool         `json:"dry_run,omitempty"`
	Removed   []string     `json:"removed"`   // generations whose trees were retired (would be, in a dry run)
	InUse     []string     `json:"in_use"`    // generations whose trees other processes run from
	Leftovers int          `json:"leftovers"` // half-made trees of dead processes retired (would be)
	Bytes     int64        `json:"bytes"`     // the disk the removed trees and leftovers took, as far as they could be walked
	Trash     trash.Report `json:"trash"`
}

// Collect removes, under o.LocalDir, the local trees no process runs from
// and o.Keep does not keep, with the half-made trees of dead processes,
// and then empties the local trash (TrashDir). Each tree leaves its name
// first, with one rename into the trash under the in-use rule (inuse.go):
// a tree some process holds a Lease on stays, and is reported InUse; a
// Collect killed or cancelled halfway leaves half-removed trees only in
// the trash, where nothing takes them for trees, and the next Collect
// finishes them. The emptying keeps two removals in flight and stops when
// ctx ends (the report's Trash.Left counts what it left).
//
// Collect costs a directory read and a lock per tree before the emptying;
// `volboot run` calls it once the handler is ready, never on the boot
// path. Safe to run concurrently with Materialize and other Collects in
// any process of the machine.
func Collect(ctx context.Context, o CollectOptions) (CollectReport, error) {
	r := CollectReport{DryRun: o.DryRun, Removed: []string{}, InUse: []string{}}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	can := localTrash(o.LocalDir, o.Logger)
	envs := filepath.Join(o.LocalDir, "envs")
	ents, err := os.ReadDir(envs)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return r, fmt.Errorf("local trees: %w", err)
	}
	for _, p := range deadLeftovers(envs) {
		r.Bytes += treeBytes(p)
		r.Leftovers++
		if !o.DryRun {
			o.Logger.Info("moving a local tree an earlier process left half made to the trash", zap.String("dir", p))
			can.Discard(p)
		}
	}
	for _, e := range ents {
		if ctx.Err() != nil {
			break
		}
		name := e.Name()
		if _, tmp := atomicfile.ParseTempName(name); tmp || !e.IsDir() {
			continue // a tree being made (dead makers' were retired above), or not a tree
		}
		if o.Keep != nil && o.Keep(name) {
			continue
		}
		dir := filepath.Join(envs, name)
		if o.Volume != "" {
			if m, err := ReadMarker(dir); err == nil && m.Volume != o.Volume {
				continue
			}
		}
		size := treeBytes(dir)
		put := can.Put
		if o.DryRun {
			put = func(string) error { return nil } // the lock was taken: it could go
		}
		switch err := retire(ctx, dir, nil, put); {
		case errors.Is(err, ErrInUse):
			r.InUse = append(r.InUse, name)
		case err != nil:
			if ctx.Err() == nil {
				o.Logger.Warn("could not retire a local tree", zap.String("generation", name), zap.Error(err))
			}
		default:
			r.Removed = append(r.Removed, name)
			r.Bytes += size
		}
	}
	sort.Strings(r.Removed)
	sort.Strings(r.InUse)
	if o.DryRun {
		return r, ctx.Err()
	}
	r.Trash, err = can.Empty(ctx)
	if err != nil {
		return r, fmt.Errorf("empty the local trash %s: %w", can.Dir, err)
	}
	return r, ctx.Err()
}

// treeBytes is the disk the tree at dir takes (its files' blocks, the
// directories' included), as far as it can be walked; symbolic links to
// the volume count as themselves.
func treeBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// Retire moves the local tree at dir into the local trash unless a
// process runs from it (ErrInUse), for repair; Collect removes it from
// there. Nothing at dir is not an error.
func Retire(ctx context.Context, localDir, dir string) error {
	return retire(ctx, dir, nil, localTrash(localDir, nil).Put)
}
