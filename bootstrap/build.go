package bootstrap

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pylock"
	"github.com/volboot/volboot/bootstrap/sdist"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
	"github.com/volboot/volboot/manifests"
)

// Sdists (DESIGN.md §5.7). A package the lock offers for this interpreter
// only as an sdist is built into a wheel by the first sync that needs it,
// under the volume lock, and the wheel is unpacked into the store under a
// build key (sdist.Key: the sdist's sha256, the interpreter, the build
// environment's wheels) instead of a wheel's sha256. From there on it is a
// store entry like any other: every later sync and generation finds it
// complete and builds nothing, gc keeps it while a kept generation lists
// the key, and a killed build leaves nothing complete-looking (the build
// runs in a throwaway directory; the unpack into the store is atomic).

// buildEnv is the build environment of this sync's sdists: the wheels the
// lock selects for [build].requirements.
type buildEnv struct {
	backend  []pylock.Selected
	err      error // why no sdist can be built
	identity string
}

// buildEnvironment selects, once per sync, the build environment.
func (c *Config) buildEnvironment(lock *pylock.Lock, info *interp.Info, py pep440.Version) *buildEnv {
	if c.builds == nil {
		sel, err := c.Manifest.BuildEnvironment(lock, targetFor(info, py, manifests.BuildGroup))
		c.builds = &buildEnv{backend: sel, err: err, identity: info.Identity()}
	}
	return c.builds
}

// checkSdists fails a selection with an sdist that cannot be built here
// because the lock lacks the build environment.
func (c *Config) checkSdists(lock *pylock.Lock, info *interp.Info, py pep440.Version, sel []pylock.Selected) (pkg, reason string) {
	for _, s := range sel {
		if s.Sdist == nil {
			continue
		}
		if env := c.buildEnvironment(lock, info, py); env.err != nil {
			return s.Package.Name + " " + s.Package.Version, fmt.Sprintf("no wheel for this interpreter, and its sdist cannot be built: %v; or %s",
				env.err, sdist.PinAdvice(s.Package.Name, s.Package.Version))
		}
	}
	return "", ""
}

// backends are the build environment's wheels, from where fetch puts
// them (or the lock's paths).
func (c *Config) backends(lock *pylock.Lock) []sdist.Backend {
	var out []sdist.Backend
	for _, s := range c.builds.backend {
		path := c.Paths.WheelFile(s.Wheel.SHA256)
		if s.Wheel.URL == "" {
			path = lock.WheelPath(s.Wheel)
		}
		out = append(out, sdist.Backend{Name: s.Package.Name, Version: s.Package.Version,
			Source: wheel.Source{Path: path, Filename: s.Wheel.Filename, SHA256: s.Wheel.SHA256}})
	}
	return out
}

// storeKey names a selected package's store entry: its wheel's sha256, or
// the build key of its sdist (checkSdists has made the build environment).
func (c *Config) storeKey(s *pylock.Selected) string {
	if s.Sdist == nil {
		return s.Wheel.SHA256
	}
	var bk []sdist.Backend
	for _, w := range c.builds.backend {
		bk = append(bk, sdist.Backend{Name: w.Package.Name, Version: w.Package.Version, Source: wheel.Source{SHA256: w.Wheel.SHA256}})
	}
	return sdist.Key(s.Sdist.SHA256, c.builds.identity, bk)
}

// sdistBuilds fetches and builds the sdists of one sync. The sdists and
// the build environment's wheels are downloaded with the other wheels;
// each sdist is built as soon as it and the build environment have
// landed, while downloads go on, and its wheel is handed to the unpacker
// under its build key.
type sdistBuilds struct {
	c         *Config
	lk        *lockfile.Lock
	lock      *pylock.Lock
	builder   *sdist.Builder
	unpack    func(wheel.Source)
	failWheel func(key, reason string)

	todo    map[string]*pylock.Selected // build key -> its selection
	backend []string                    // sha256 of each build environment wheel
	items   []fetch.Item

	ctx     context.Context
	mu      sync.Mutex
	landed  map[string]bool   // sha256 of sdists and backend wheels on disk, verified
	started map[string]bool   // build keys
	failed  map[string]string // build key -> why
	sem     chan struct{}
	wg      sync.WaitGroup
}

// maxBuilds is how many sdists build at once: each is a Python process,
// mostly single-threaded, beside downloads and unpacks.
const maxBuilds = 2

func (c *Config) newSdistBuilds(lk *lockfile.Lock, lock *pylock.Lock, info *interp.Info, failWheel func(string, string)) *sdistBuilds {
	b := &sdistBuilds{c: c, lk: lk, lock: lock, failWheel: failWheel,
		todo: map[string]*pylock.Selected{}, landed: map[string]bool{}, started: map[string]bool{}, failed: map[string]string{},
		sem: make(chan struct{}, maxBuilds)}
	if c.builds != nil && c.builds.err == nil {
		b.builder = &sdist.Builder{Python: info, Backend: c.backends(lock), Env: markerEnv(info, []string{manifests.BuildGroup}),
			Timeout: c.Manifest.Build.Timeout, Logger: c.Logger}
	}
	return b
}

// add plans the build of s, whose store key is key; it returns the bytes
// its download will add, for the disk preflight.
func (b *sdistBuilds) add(key string, s *pylock.Selected) int64 {
	b.todo[key] = s
	sd := s.Sdist
	if sd.URL == "" {
		if err := verifyFile(b.lock.SdistPath(sd), sd.SHA256, sd.Size); err != nil {
			b.failed[key] = err.Error()
			return 0
		}
		b.landed[sd.SHA256] = true
		return 0
	}
	b.addItem(fetch.Item{
		Name: s.Package.Name + "-" + s.Package.Version + " (sdist)",
		URLs: b.c.mirrorsFor(sd.URL), Size: sd.Size,
		Digest: fetch.Digest{Kind: fetch.SHA256, Hex: sd.SHA256},
		Dest:   b.c.Paths.SdistFile(sd.SHA256, sd.Ext()), Part: b.c.Paths.SdistPart(sd.SHA256),
	})
	return max(sd.Size, 0)
}

func (b *sdistBuilds) addItem(it fetch.Item) {
	for _, have := range b.items {
		if have.Dest == it.Dest {
			return
		}
	}
	b.items = append(b.items, it)
}

// fetchItems are the downloads the builds need beyond the wheels the
// sync fetches anyway (wheels).
func (b *sdistBuilds) fetchItems(wheels []fetch.Item) []fetch.Item {
	fetching := map[string]bool{}
	for _, it := range wheels {
		fetching[it.Digest.Hex] = true
	}
	if len(b.todo) == 0 {
		return nil
	}
	if b.builder == nil {
		return nil // checkSdists failed every group that has an sdist
	}
	for _, s := range b.c.builds.backend {
		sha := s.Wheel.SHA256
		b.backend = append(b.backend, sha)
		switch {
		case s.Wheel.URL == "":
			if err := verifyFile(b.lock.WheelPath(s.Wheel), sha, s.Wheel.Size); err != nil {
				for key := range b.todo {
					b.failed[key] = "build environment: " + err.Error()
				}
				continue
			}
			b.landed[sha] = true
		case fetching[sha]:
		default:
			b.addItem(fetch.Item{
				Name: s.Package.Name + "-" + s.Package.Version,
				URLs: b.c.mirrorsFor(s.Wheel.URL), Size: s.Wheel.Size,
				Digest: fetch.Digest{Kind: fetch.SHA256, Hex: sha},
				Dest:   b.c.Paths.WheelFile(sha), Part: b.c.Paths.WheelPart(sha),
			})
		}
	}
	if len(b.items) > 0 {
		if err := os.MkdirAll(b.c.Paths.Sdists(), 0o755); err != nil {
			for key := range b.todo {
				b.failed[key] = err.Error()
			}
		}
	}
	return b.items
}

// start lets builds begin (under ctx) as their inputs land, and begins
// those whose inputs are there already.
func (b *sdistBuilds) start(ctx context.Context) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ctx = ctx
	b.startReady()
}

// landedFile is called for every download that lands (any goroutine).
func (b *sdistBuilds) landedFile(sha string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.landed[sha] = true
	b.startReady()
}

// startReady starts every build whose sdist and build environment are on
// disk. b.mu is held.
func (b *sdistBuilds) startReady() {
	if b.ctx == nil || b.builder == nil {
		return
	}
	for _, sha := range b.backend {
		if !b.landed[sha] {
			return
		}
	}
	keys := make([]string, 0, len(b.todo))
	for key := range b.todo {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		s := b.todo[key]
		if b.started[key] || b.failed[key] != "" || !b.landed[s.Sdist.SHA256] {
			continue
		}
		b.started[key] = true
		b.wg.Add(1)
		go b.build(b.ctx, key, s)
	}
}

func (b *sdistBuilds) build(ctx context.Context, key string, s *pylock.Selected) {
	defer b.wg.Done()
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-b.sem }()
	name := s.Package.Name + " " + s.Package.Version
	path := b.c.Paths.SdistFile(s.Sdist.SHA256, s.Sdist.Ext())
	if s.Sdist.URL == "" {
		path = b.lock.SdistPath(s.Sdist)
	}
	b.lk.SetPhase("building " + name + " from its sdist")
	b.c.Logger.Info("building "+name+" from its sdist", zap.String("sdist", s.Sdist.Filename), zap.String("key", key))
	r, err := b.builder.Build(ctx, sdist.Source{Path: path, Name: s.Package.Name, Version: s.Package.Version})
	if err != nil {
		if ctx.Err() != nil {
			return // the sync stops; nothing is wrong with the sdist
		}
		b.c.Logger.Warn("could not build "+name+" from its sdist", zap.Error(err))
		b.mu.Lock()
		b.failed[key] = err.Error()
		b.mu.Unlock()
		return
	}
	b.c.Logger.Info("built "+name+" from its sdist", zap.String("wheel", r.Filename), zap.Duration("took", r.Took))
	b.unpack(wheel.Source{Path: r.Wheel, Filename: r.Filename, SHA256: key})
}

// fetched takes the download results: a failed sdist fails its build, a
// failed build environment wheel fails them all.
func (b *sdistBuilds) fetched(results []fetch.Result) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bad := map[string]string{}
	for _, r := range results {
		if r.Err != nil {
			bad[r.Item.Digest.Hex] = r.Err.Error()
		}
	}
	for key, s := range b.todo {
		if why := bad[s.Sdist.SHA256]; why != "" && b.failed[key] == "" {
			b.failed[key] = why
		}
		for _, sha := range b.backend {
			if why := bad[sha]; why != "" && b.failed[key] == "" {
				b.failed[key] = "build environment: " + why
			}
		}
	}
}

// wait starts the builds that can start, waits for every build, and fails
// the packages whose build failed; it returns their keys.
func (b *sdistBuilds) wait() []string {
	b.mu.Lock()
	b.startReady()
	running := 0
	for key := range b.started {
		if b.failed[key] == "" {
			running++
		}
	}
	b.mu.Unlock()
	if running > 0 {
		b.c.Progress.Phase(fmt.Sprintf("building %d sdists", running))
	}
	b.wg.Wait()
	var keys []string
	for key, why := range b.failed {
		b.failWheel(key, why)
		keys = append(keys, key)
	}
	return keys
}

// close removes the builds' throwaway directory, once the unpacker is done
// with the wheels in it.
func (b *sdistBuilds) close() {
	if b.builder != nil {
		if err := b.builder.Close(); err != nil {
			b.c.Logger.Warn("removing the sdist builds' directory", zap.Error(err))
		}
	}
}
