package bootstrap

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/trash"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
)

// What a killed worker leaves, and what the next one does with it
// (DESIGN.md §5.4-§5.6). Nothing on the boot path removes a tree: on a network
// volume that is a round trip per file, and a worker that spends its life
// undoing the previous one's work never converges under a kill loop.
//
//   - A store entry, generation or pack left partly made (a staging
//     directory, final name "<name>.partial") is taken over and completed
//     by the next sync that wants it (wheel/resume.go, venv/resume.go,
//     locallayout/packframes.go); those nobody wants once the sync is done
//     go to the trash.
//   - Any other leftover directory of a dead writer goes to the trash with
//     one rename; a leftover file is removed (one unlink, no more than the
//     rename would cost).
//   - The trash is emptied in the background once the handler is ready,
//     and by gc (trash package).

// trash is the volume's trash.
func (c *Config) trash() *trash.Can {
	return &trash.Can{Dir: c.Paths.Trash(), Logger: c.Logger}
}

// EmptyTrash removes what is in the volume's trash (trash.Can.Empty); it
// needs no lock.
func (c Config) EmptyTrash(ctx context.Context) (trash.Report, error) {
	c.defaults()
	return c.trash().Empty(ctx)
}

// adoptable says whether this sync may take over a staging directory named
// by ti. Under the volume lock, yes for any but our own: every process that
// writes staging directories holds the lock, so the one that wrote it held
// the lock before us and is dead or fenced (and the resume checks make even
// a fenced writer harmless: see wheel/resume.go). With no lock at all, only
// a writer seen dead, since taking a live writer's directory would fail its
// sync.
func (c *Config) adoptable(ti atomicfile.TempInfo, e fs.DirEntry) bool {
	if atomicfile.Mine(ti) {
		return false
	}
	if c.LockMode != lockfile.ModeOff {
		return true
	}
	host, _ := os.Hostname()
	return writerDead(ti, atomicfile.HostToken(host), e)
}

// isStaging reports whether the leftover at path is a store entry's, a
// generation's or a pack's staging directory, which a sync resumes.
func (c *Config) isStaging(path string) bool {
	dir, base := filepath.Split(path)
	ti, ok := atomicfile.ParseTempName(base)
	if !ok || !strings.HasSuffix(ti.Final, wheel.PartialSuffix) {
		return false
	}
	return slices.Contains(c.stagingParents(), filepath.Clean(dir))
}

// stagingParents are the directories that hold staging directories.
func (c *Config) stagingParents() []string {
	return []string{c.Paths.Store(), c.Paths.Envs(), c.Paths.Packs()}
}

// setAsideLeftovers runs under the volume lock before a sync does work: the
// dead writers' leftovers (see leftovers) leave the boot path, each with one
// rename or unlink, except the staging directories the sync resumes.
func (c *Config) setAsideLeftovers() {
	can := c.trash()
	start, n := c.Now(), 0
	defer func() {
		if n > 0 {
			c.Logger.Info(fmt.Sprintf("set aside %d dead writers' leftovers", n), zap.Int("count", n), zap.Duration("took", c.Now().Sub(start)))
		}
	}()
	for _, d := range leftovers(c.Paths) {
		path, _, _ := strings.Cut(d.Detail, " (")
		if c.isStaging(path) {
			continue
		}
		fi, err := os.Lstat(path)
		if err != nil {
			continue
		}
		n++
		if !fi.IsDir() {
			c.Logger.Info("removing a dead writer's temporary file", zap.String("path", path))
			os.Remove(path)
			continue
		}
		c.Logger.Info("moving a dead writer's leftover to the trash", zap.String("path", path))
		if err := can.Put(path); err != nil {
			c.Logger.Warn("could not move a leftover to the trash; it stays", zap.Error(err))
		}
	}
}

// trashUnwanted runs under the volume lock after a sync succeeded: staging
// directories it could have adopted but did not need (a wheel the lock no
// longer wants, a generation id never built), and its own that a cancelled
// build left, go to the trash.
func (c *Config) trashUnwanted() {
	can := c.trash()
	// Ours too: this sync is done, and a build it abandoned (a speculation
	// whose groups changed) left its staging behind.
	for _, p := range c.stagingDirs(true) {
		c.Logger.Info("moving a partial build nobody needs now to the trash", zap.String("path", p))
		if err := can.Put(p); err != nil {
			c.Logger.Warn("could not move a leftover to the trash; it stays", zap.Error(err))
		}
	}
}

// stagingDirs lists the staging directories in the store, the
// generations and the packs that this process could adopt, and with ours
// its own too.
func (c *Config) stagingDirs(ours bool) []string {
	var out []string
	for _, dir := range c.stagingParents() {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			ti, ok := atomicfile.ParseTempName(e.Name())
			if ok && strings.HasSuffix(ti.Final, wheel.PartialSuffix) && (ours && atomicfile.Mine(ti) || c.adoptable(ti, e)) {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	return out
}
