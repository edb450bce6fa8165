package bootstrap

// Fetching and unpacking a sync's wheels and models, and the index rules
// the downloads follow (mirrors, plain HTTP, unused indexes).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/models"
	"github.com/volboot/volboot/bootstrap/pylock"
	"github.com/volboot/volboot/bootstrap/redact"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/lockfile"
	"github.com/volboot/volboot/manifests"
)

// fetchAndUnpack makes sure the store holds every wheel: those in held
// are complete already; others are downloaded (resumably) into the cache
// or read from the lock's path, then unpacked and verified. Each wheel is
// unpacked as soon as its download lands, while the others still
// download: a first boot then costs about its downloads, not its
// downloads plus its unpacks.
func (c *Config) fetchAndUnpack(ctx context.Context, lk *lockfile.Lock, info *interp.Info, f *fetch.Fetcher, store *wheel.Store, wheels map[string]*pylock.Selected, held map[string]*wheel.Entry, failWheel func(sha, reason string), arrived func(key string, e *wheel.Entry)) (map[string]*wheel.Entry, int64, error) {
	lock, err := c.Lock.Parse()
	if err != nil {
		return nil, 0, err
	}
	builds := c.newSdistBuilds(lk, lock, info, failWheel)
	defer builds.close()
	entries := map[string]*wheel.Entry{}
	var items []fetch.Item
	var local []wheel.Source // wheels the lock names by path
	srcOf := map[string]wheel.Source{}
	var estimate, unpackTotal int64
	shas := make([]string, 0, len(wheels))
	for sha := range wheels {
		shas = append(shas, sha)
	}
	sort.Strings(shas)
	for _, sha := range shas {
		s := wheels[sha]
		if e := held[sha]; e != nil {
			entries[sha] = e
			continue
		}
		if s.Sdist != nil {
			estimate += builds.add(sha, s) * 3
			continue
		}
		if s.Wheel.Size > 0 {
			estimate += s.Wheel.Size * 3 // wheels unpack to about three times their size
			unpackTotal += s.Wheel.Size
		}
		if s.Wheel.URL == "" {
			path := lock.WheelPath(s.Wheel)
			if err := verifyFile(path, s.Wheel.SHA256, s.Wheel.Size); err != nil {
				failWheel(sha, err.Error())
				continue
			}
			local = append(local, wheel.Source{Path: path, Filename: s.Wheel.Filename, SHA256: sha, Size: s.Wheel.Size})
			continue
		}
		items = append(items, fetch.Item{
			Name: s.Package.Name + "-" + s.Package.Version,
			URLs: c.mirrorsFor(s.Wheel.URL), Size: s.Wheel.Size,
			Digest: fetch.Digest{Kind: fetch.SHA256, Hex: sha},
			Dest:   c.Paths.WheelFile(sha), Part: c.Paths.WheelPart(sha),
		})
		srcOf[sha] = wheel.Source{Path: c.Paths.WheelFile(sha), Filename: s.Wheel.Filename, SHA256: sha, Size: s.Wheel.Size}
	}
	items = append(items, builds.fetchItems(items)...)
	if len(items) == 0 && len(local) == 0 && len(builds.todo) == 0 {
		c.Progress.Packages(len(held), len(wheels))
		return entries, 0, nil
	}
	// Say what a previous worker left and this one reuses.
	partial := 0
	for _, sha := range shas {
		if held[sha] == nil && store.HasPartial(sha) {
			partial++
		}
	}
	c.Logger.Info(fmt.Sprintf("store: %d of %d entries complete, %d partly unpacked to resume", len(held), len(wheels), partial),
		zap.Int("complete", len(held)), zap.Int("wanted", len(wheels)), zap.Int("partial", partial))
	if len(items) > 0 {
		c.noteUnusedIndexes(lock)
		if err := os.MkdirAll(c.Paths.Wheels(), 0o755); err != nil {
			return nil, 0, fmt.Errorf("create download cache: %w", err)
		}
		if err := fetch.Preflight(items, estimate, c.Paths.Root, c.VolumeSize); err != nil {
			return nil, 0, err
		}
	}
	if err := lk.Check(); err != nil {
		return nil, 0, err
	}
	// Store entries are committed all through the downloads: the unpacks
	// stop as soon as the lock is lost (fenced by a takeover).
	uctx, stopLock := lk.Context(ctx)
	defer stopLock()
	u, err := store.NewUnpacker(uctx)
	if err != nil {
		return nil, 0, err
	}
	// Each entry goes to the speculative build as soon as it is complete.
	u.OnDone(func(_ int, src wheel.Source, e *wheel.Entry, _ error) { arrived(src.SHA256, e) })
	// Packages in the store, for /status: what a kill would not lose.
	c.Progress.Packages(len(held), len(wheels))
	stopCount := make(chan struct{})
	counted := make(chan struct{})
	go func() {
		defer close(counted)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopCount:
				return
			case <-t.C:
				c.Progress.Packages(len(held)+u.Unpacked(), len(wheels))
				c.Progress.Unpacked(u.UnpackedBytes(), unpackTotal)
			}
		}
	}()
	defer func() {
		close(stopCount)
		<-counted
		c.Progress.Packages(len(held)+u.Unpacked(), len(wheels))
		c.Progress.Unpacked(u.UnpackedBytes(), unpackTotal)
	}()
	// The unpacker's results are indexed as Add returned; added is read
	// only after Wait. A download fetched again after a lost race may land
	// twice: it is unpacked once.
	var mu sync.Mutex
	var added []wheel.Source
	queued := map[string]bool{}
	unpack := func(src wheel.Source) {
		mu.Lock()
		defer mu.Unlock()
		if queued[src.SHA256] {
			return
		}
		queued[src.SHA256] = true
		u.Add(src)
		added = append(added, src)
	}
	for _, src := range local {
		unpack(src)
	}
	// Built wheels are unpacked like downloaded ones, under their keys;
	// builds stop, as unpacks do, when the lock is lost.
	builds.unpack = unpack
	builds.start(uctx)
	var downloaded int64
	failed := map[string]bool{}
	// Wheels unpack while others download, so the volume may fill under
	// either: both say the same thing.
	var full []error
	if len(items) > 0 {
		c.Progress.Phase("downloading")
		lk.SetPhase(fmt.Sprintf("downloading %d wheels", len(items)))
		landed := func(it fetch.Item) {
			if src, ok := srcOf[it.Digest.Hex]; ok {
				unpack(src)
			}
			builds.landedFile(it.Digest.Hex)
		}
		results, _ := f.FetchEach(ctx, items, func(i int) { landed(items[i]) })
		results = c.refetchLostRaces(ctx, f, results, landed)
		builds.fetched(results)
		for _, r := range results {
			sha := r.Item.Digest.Hex
			if r.Err != nil {
				if isNoSpace(r.Err) {
					full = append(full, r.Err)
				}
				failWheel(sha, r.Err.Error())
				failed[sha] = true
				continue
			}
			if !r.Cached && r.Item.Size > 0 {
				downloaded += r.Item.Size
			}
		}
	}
	for _, key := range builds.wait() {
		failed[key] = true
	}
	if n := u.Pending(); n > 0 {
		phase := fmt.Sprintf("unpacking %d wheels", n)
		c.Progress.Phase(phase)
		lk.SetPhase(phase)
	}
	got, errs := u.Wait()
	if n, kept := store.Resumed(); n > 0 {
		c.Logger.Info(fmt.Sprintf("store: resumed %d partly unpacked entries, keeping %d of their files", n, kept),
			zap.Int("resumed", n), zap.Int("kept", kept))
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if err := lk.Err(); err != nil {
		return nil, 0, err
	}
	for i, e := range got {
		src := added[i]
		if failed[src.SHA256] {
			continue // its download failed after it landed (the cache directory's sync)
		}
		if e == nil {
			if isNoSpace(errs[i]) {
				full = append(full, errs[i])
			}
			failWheel(src.SHA256, unpackReason(errs[i], src.Filename))
			continue
		}
		entries[src.SHA256] = e
	}
	if len(full) > 0 {
		return nil, 0, fmt.Errorf("the volume is full: %w; free space (volboot gc) or grow the volume, then sync again", errors.Join(full...))
	}
	return entries, downloaded, nil
}

// refetchLostRaces fetches again every item that lost a race with another
// writer of the same content-named download (lock mode off, or a lock two
// clients both believe they hold): its part file vanished or was replaced.
// That writer may have finished the file or may still be writing it; a few
// rounds, a jittered moment apart, settle it (rule 2: the race costs time,
// never correctness).
func (c *Config) refetchLostRaces(ctx context.Context, f *fetch.Fetcher, results []fetch.Result, landed func(fetch.Item)) []fetch.Result {
	for round := 1; round <= 6 && ctx.Err() == nil; round++ {
		var again []fetch.Item
		for _, r := range results {
			if r.Err != nil && (errors.Is(r.Err, fs.ErrNotExist) || errors.Is(r.Err, fetch.ErrReplaced)) {
				c.Logger.Info("a download lost a race with another writer; fetching it again", zap.String("item", r.Item.Name), zap.Int("round", round), zap.Error(r.Err))
				again = append(again, r.Item)
			}
		}
		if len(again) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return results
		case <-time.After(time.Duration(100+mrand.IntN(400*round)) * time.Millisecond):
		}
		retried, _ := f.FetchEach(ctx, again, func(i int) { landed(again[i]) })
		byDigest := map[string]fetch.Result{}
		for _, r := range retried {
			byDigest[r.Item.Digest.Hex] = r
		}
		for i, r := range results {
			if n, ok := byDigest[r.Item.Digest.Hex]; ok {
				results[i] = n
			}
		}
	}
	return results
}

// fetcher is the downloader for wheels and model files; its progress goes
// to the lock holder's phase and the health state.
func (c *Config) fetcher(lk *lockfile.Lock) *fetch.Fetcher {
	return fetch.New(fetch.Options{
		Client: c.HTTP, Logger: c.Logger, Jobs: c.Jobs, Credentials: c.Credentials,
		AllowHTTP: c.allowHTTP(),
		Progress: fetch.ProgressOptions{Terminal: c.Terminal, Output: c.ProgressOut, Phase: func(s string) {
			lk.SetPhase(s)
			c.Progress.Phase(s)
		}, Bytes: c.Progress.Bytes},
	})
}

// modelFetch is the fetch of the active groups' models into the hub
// cache, which runs beside the packages' downloads and unpack: on a
// network volume the unpack is bound by file operations and the models
// by the network, so neither waits for the other. It must be waited for
// (wait) on every path.
type modelFetch struct {
	stop    func() // ends the fetch's context
	want    []models.Model
	results []models.Result
	err     error
	done    chan struct{}
}

// startModels starts fetching the models of every group active now; it
// returns nil when there are none. The groups are read here, before any
// download can change them. The fetch stops when ctx ends or the lock is
// lost.
func (c *Config) startModels(ctx context.Context, lk *lockfile.Lock, f *fetch.Fetcher, plans []*groupPlan) *modelFetch {
	active := map[string]bool{}
	for _, p := range plans {
		active[p.group.Name] = p.active()
	}
	mf := &modelFetch{done: make(chan struct{}), stop: func() {}}
	for _, m := range c.Manifest.Models {
		if active[m.Group] {
			mf.want = append(mf.want, models.Model{Repo: m.Repo, Revision: m.Revision, RepoType: m.RepoType, Files: m.Files, Group: m.Group})
		}
	}
	if len(mf.want) == 0 {
		return nil
	}
	c.Logger.Info(fmt.Sprintf("fetching %d models beside the packages", len(mf.want)), zap.Int("models", len(mf.want)))
	syncer, err := models.New(models.Options{Endpoint: models.EndpointFromEnv(c.Getenv), HubDir: c.Paths.Hub(), Fetcher: f,
		Credentials: c.Credentials, Logger: c.Logger, Jobs: c.Jobs, AllowHTTP: c.allowHTTP()})
	if err != nil {
		mf.err = fmt.Errorf("models: %w", err)
		close(mf.done)
		return mf
	}
	mctx, stop := lk.Context(ctx)
	mf.stop = stop
	go func() {
		defer close(mf.done)
		mf.results = syncer.Sync(mctx, mf.want)
	}()
	return mf
}

// cancel stops the fetch; wait must still be called. nil-safe.
func (mf *modelFetch) cancel() {
	if mf != nil {
		mf.stop()
	}
}

// wait waits for the models and records them. A model that failed
// degrades its group, as a failing package does, unless the group's
// packages failed meanwhile: a package's failure outranks a model's, and
// the models of a group that is no longer active are not recorded (the
// files fetched stay in the hub cache for the group's retry). nil-safe.
func (mf *modelFetch) wait(ctx context.Context, lk *lockfile.Lock, progress Progress, plans []*groupPlan) ([]ModelRecord, error) {
	if mf == nil {
		return nil, nil
	}
	select {
	case <-mf.done:
	default:
		phase := fmt.Sprintf("fetching %d models", len(mf.want))
		progress.Phase(phase)
		lk.SetPhase(phase)
		<-mf.done
	}
	mf.stop()
	if mf.err != nil {
		return nil, mf.err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := lk.Check(); err != nil {
		return nil, err
	}
	byGroup := map[string]*groupPlan{}
	for _, p := range plans {
		byGroup[p.group.Name] = p
	}
	var records []ModelRecord
	for _, r := range mf.results {
		p := byGroup[r.Model.Group]
		if p == nil || !p.active() {
			continue
		}
		rec := ModelRecord{Repo: r.Model.Repo, Revision: r.Model.Revision, Commit: r.Snapshot.Commit, Group: r.Model.Group, OK: r.Err == nil, Files: r.Snapshot.Files}
		if r.Err != nil {
			rec.Reason = r.Err.Error()
			p.failModel(r.Model.Repo, r.Err.Error())
		}
		records = append(records, rec)
	}
	return records, nil
}

// unpackReason picks the line of a joined unpack error that names filename.
func unpackReason(err error, filename string) string {
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.Contains(line, filename) {
			return line
		}
	}
	return err.Error()
}

func isNoSpace(err error) bool {
	return err != nil && (errors.Is(err, errNoSpace) || strings.Contains(err.Error(), "no space left on device"))
}

// mirrorsFor lists a file's URL (a wheel's or an sdist's) and, for every
// manifest index whose URL (or a mirror's) prefixes it, the same file
// under each other mirror.
func (c *Config) mirrorsFor(url string) []string {
	urls := []string{url}
	for _, ix := range c.Manifest.Indexes {
		bases, rest, ok := underIndex(ix, url)
		if !ok {
			continue
		}
		for _, other := range bases {
			u := strings.TrimSuffix(other, "/") + "/" + rest
			if u != url {
				urls = append(urls, u)
			}
		}
		return urls
	}
	return urls
}

// underIndex says whether u is a file under ix's URL or one of its
// mirrors, and returns those bases and u's path below them.
func underIndex(ix manifests.Index, u string) (bases []string, rest string, ok bool) {
	bases = append([]string{ix.URL}, ix.Mirrors...)
	for _, b := range bases {
		if rest, ok := strings.CutPrefix(u, strings.TrimSuffix(b, "/")+"/"); ok {
			return bases, rest, true
		}
	}
	return nil, "", false
}

// noteUnusedIndexes says which manifest indexes no package of the lock
// came from and no wheel of it is under. volboot never asks an index for a
// package (the lock gives every wheel's URL); an index only lends its
// mirrors to the wheels under it, so one that prefixes no URL of the lock
// does nothing, which whoever listed it may not expect. A package the lock
// says came from the index (its index key, as uv writes for PyPI, whose
// files are on another host) counts as a use.
func (c *Config) noteUnusedIndexes(lock *pylock.Lock) {
	for _, ix := range c.Manifest.Indexes {
		used := false
		for _, p := range lock.Packages {
			if p.Index != "" && strings.TrimSuffix(p.Index, "/") == strings.TrimSuffix(ix.URL, "/") {
				used = true
			}
			for _, w := range p.Wheels {
				if _, _, ok := underIndex(ix, w.URL); ok {
					used = true
				}
			}
			if p.Sdist != nil {
				if _, _, ok := underIndex(ix, p.Sdist.URL); ok {
					used = true
				}
			}
		}
		if !used {
			c.Logger.Info(fmt.Sprintf("index %s is not used: volboot downloads the URLs the lock gives, and none is under %s or its mirrors", ix.Name, redact.URL(ix.URL)),
				zap.String("index", ix.Name))
		}
	}
}

func (c *Config) allowHTTP() []string {
	var hosts []string
	for _, ix := range c.Manifest.Indexes {
		if !ix.AllowHTTP {
			continue
		}
		for _, u := range append([]string{ix.URL}, ix.Mirrors...) {
			if h := hostOf(u); h != "" {
				hosts = append(hosts, h)
			}
		}
	}
	return hosts
}
