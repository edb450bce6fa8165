package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
)

// repairVolume runs under the volume lock before a repairing sync: it
// removes dead writers' leftovers and, when the generation this boot maps
// to fails status --verify, removes model blobs whose content does not
// match their names, drops the store entries with bad files and their
// cached downloads, and marks the generation for replacement, so that the
// sync that follows re-fetches what the store and the hub cache lost and
// builds the generation again from the store (same content, so the same
// generation id) beside the damaged one, then swaps it in.
func (c *Config) repairVolume(ctx context.Context, lk *lockfile.Lock, key string) error {
	c.setAsideLeftovers()
	st := c.readState()
	gen := st.Generations[st.Keys[key]]
	if gen == nil {
		return nil
	}
	c.repairLocal(ctx, gen)
	_, bad := c.modelDrift(gen, true, nil)
	drift := c.verifyGeneration(ctx, gen)
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(drift) == 0 && len(bad) == 0 {
		return nil
	}
	if err := lk.Check(); err != nil {
		return err
	}
	// Model blobs whose content no longer matches their names go; the sync
	// that follows fetches them again.
	for _, b := range bad {
		c.Logger.Warn("repair: removing a model blob whose content does not match its name", zap.String("blob", b))
		if err := os.Remove(b); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("repair: remove %s: %w", b, err)
		}
	}
	if len(drift) == 0 {
		return nil
	}
	// A store entry with a bad file is fetched and unpacked again; a
	// generation whose own tree is damaged over a sound store is only
	// built again from it.
	broken := map[string]bool{}
	for _, d := range drift {
		c.Logger.Warn("repair: found", zap.String("kind", d.Kind), zap.String("package", d.Package), zap.String("detail", d.Detail))
		if d.Kind != DriftCorrupt && d.Kind != DriftStoreIncomplete {
			continue
		}
		for _, p := range gen.Packages {
			if p.Name == d.Package {
				broken[p.SHA256] = true
			}
		}
	}
	store := &wheel.Store{Dir: c.Paths.Store()}
	can := c.trash()
	for sha := range broken {
		c.Logger.Warn("repair: dropping a broken store entry", zap.String("sha256", sha))
		if err := can.Put(store.EntryDir(sha)); err != nil {
			return err
		}
		os.Remove(c.Paths.WheelFile(sha))
	}
	// The generation is built again beside the damaged one and swapped in
	// (venv.Builder.Replace): a handler running from it never finds a
	// path missing, and keeps its open files.
	c.replaceGen = gen.ID
	return nil
}
