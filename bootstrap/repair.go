package bootstrap

import (
	"context"
	"os"
	"strings"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
)

// removeLeftovers removes the temporary files and directories of writers
// that are gone (see leftovers). It runs under the volume lock, before any
// sync that does work, so a worker killed mid-sync costs the next one only
// time, never space.
func (c *Config) removeLeftovers() {
	for _, d := range leftovers(c.Paths) {
		path, _, _ := strings.Cut(d.Detail, " (")
		c.Logger.Info("removing a dead writer's leftover", zap.String("path", path))
		os.RemoveAll(path)
	}
}

// repairVolume runs under the volume lock before a repairing sync: it
// removes dead writers' leftovers and, when the generation this boot maps
// to has files that fail their RECORD check, drops the broken store entries
// and their cached downloads and moves the generation aside, so that the
// sync that follows re-fetches, re-unpacks and rebuilds exactly what was
// broken (same content, so the same generation id).
func (c *Config) repairVolume(ctx context.Context, lk *lockfile.Lock, key string) error {
	c.removeLeftovers()
	st := c.readState()
	gen := st.Generations[st.Keys[key]]
	if gen == nil {
		return nil
	}
	broken := map[string]bool{}
	for _, d := range c.verifyGeneration(ctx, gen) {
		for _, p := range gen.Packages {
			if p.Name == d.Package {
				broken[p.SHA256] = true
			}
		}
	}
	if len(broken) == 0 {
		return nil
	}
	if err := lk.Check(); err != nil {
		return err
	}
	store := &wheel.Store{Dir: c.Paths.Store()}
	for sha := range broken {
		c.Logger.Warn("repair: dropping a broken store entry", zap.String("sha256", sha))
		if err := atomicfile.RemoveTree(store.EntryDir(sha)); err != nil {
			return err
		}
		os.Remove(c.Paths.WheelFile(sha))
	}
	// The generation links the broken files: move it aside whole. A
	// handler running from it keeps its open files; new imports find the
	// rebuilt generation under the same name.
	if err := atomicfile.RemoveTree(c.Paths.Env(gen.ID)); err != nil {
		c.Logger.Warn("repair: removing the old generation", zap.Error(err))
	}
	return nil
}
