package lockfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// LeaseOptions configures HoldLease. Dir, WorkerID and Generation are
// required.
type LeaseOptions struct {
	// Dir is the .volboot directory; leases live in Dir/leases.
	Dir string
	// WorkerID names the lease file: letters, digits, '.', '_', '-'. Two
	// live workers must not share one (use the pod id plus the pid).
	WorkerID   string
	Generation string
	Logger     *zap.Logger
	// Identity: zero fields are filled from LocalIdentity.
	Identity Identity
	// TTL sets the default Heartbeat and the age past which temporary
	// files of crashed writers in leases/ are removed (default 60 s).
	// Listers apply their own TTL (ListOptions.TTL), which must match.
	TTL time.Duration
	// Heartbeat is how often the lease file is rewritten (default TTL/6).
	Heartbeat time.Duration
	Clock     Clock
}

// Lease is a held use-lease: leases/<worker-id>.json names the generation
// this worker runs, rewritten every Heartbeat by a goroutine the Lease owns,
// so that its modification time stays recent. The goroutine stops on
// Release or when ctx (given to HoldLease) ends; after that the file ages
// and listers soon count the lease as dead.
type Lease struct {
	o    LeaseOptions
	path string

	mu  sync.Mutex
	rec LeaseRecord

	stop        chan struct{}
	done        chan struct{}
	releaseOnce sync.Once
	releaseErr  error
}

// HoldLease writes the lease file and starts refreshing it.
func HoldLease(ctx context.Context, o LeaseOptions) (*Lease, error) {
	if o.Dir == "" {
		return nil, errors.New("lockfile: LeaseOptions.Dir is empty")
	}
	if err := checkWorkerID(o.WorkerID); err != nil {
		return nil, fmt.Errorf("use-lease: %w", err)
	}
	if err := checkName("generation", o.Generation); err != nil {
		return nil, fmt.Errorf("use-lease: %w", err)
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = o.TTL / 6
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	o.Identity = fillIdentity(o.Identity)
	dir := filepath.Join(o.Dir, "leases")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create lease directory: %w", err)
	}
	now := o.Clock.Now().UTC().Round(0)
	l := &Lease{
		o:    o,
		path: filepath.Join(dir, o.WorkerID+".json"),
		rec: LeaseRecord{Schema: SchemaVersion, WorkerID: o.WorkerID, Generation: o.Generation,
			Identity: o.Identity, Started: now},
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if err := l.refresh(); err != nil {
		return nil, err
	}
	// Temporary files of workers that crashed mid-write: older than the
	// TTL by the volume's clock (our fresh lease file's stamp).
	if info, err := os.Stat(l.path); err == nil {
		removeStaleTemps(o.Logger, dir, "", info.ModTime(), o.TTL)
	}
	go l.loop(ctx)
	return l, nil
}

// Path is the lease file.
func (l *Lease) Path() string { return l.path }

func (l *Lease) refresh() error {
	l.mu.Lock()
	rec := l.rec
	rec.Heartbeat++
	rec.Updated = l.o.Clock.Now().UTC().Round(0)
	l.mu.Unlock()
	data, err := marshalRecord(rec)
	if err != nil {
		return fmt.Errorf("encode use-lease: %w", err)
	}
	if rec.Heartbeat > 1 {
		if _, err := os.Stat(l.path); errors.Is(err, fs.ErrNotExist) {
			// Someone (gc) judged this worker dead, perhaps after a pause.
			// Its generation may be gone; say so loudly and carry on.
			l.o.Logger.Error("use-lease file was removed by another worker; rewriting it, but generation "+rec.Generation+" may have been collected",
				zap.String("path", l.path))
		}
	}
	// No fsync: a lease means nothing after the machine crashes (its
	// worker is gone too), and listers judge it by its age alone.
	if err := atomicfile.WriteVolatile(l.path, data, 0o644); err != nil {
		return fmt.Errorf("write use-lease: %w", err)
	}
	l.mu.Lock()
	l.rec = rec
	l.mu.Unlock()
	return nil
}

func (l *Lease) loop(ctx context.Context) {
	defer close(l.done)
	for {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		case <-l.o.Clock.After(l.o.Heartbeat):
		}
		if err := l.refresh(); err != nil {
			l.o.Logger.Warn("could not refresh use-lease", zap.String("path", l.path), zap.Error(err))
		}
	}
}

// Release stops refreshing and removes the lease file.
func (l *Lease) Release() error {
	l.releaseOnce.Do(func() {
		close(l.stop)
		<-l.done
		if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			l.releaseErr = fmt.Errorf("remove use-lease: %w", err)
		}
	})
	return l.releaseErr
}

// ListOptions configures ListLeases.
type ListOptions struct {
	// TTL: a lease file older than this (see ListLeases) is dead. Default
	// 60 s; it must exceed the holders' heartbeat by a good margin.
	TTL time.Duration
	// Identity of the lister, for the same-host dead-pid rule; zero fields
	// are filled from LocalIdentity.
	Identity Identity
}

// LeaseEntry is one lease file as ListLeases judged it.
type LeaseEntry struct {
	Path     string
	WorkerID string // from the file name
	// Record is nil when the file does not parse; Err says why.
	Record *LeaseRecord
	Err    error
	// Age is the lister's reference time minus the file's modification
	// time, both stamped by the volume's filesystem.
	Age    time.Duration
	Live   bool
	Reason string
}

// ListLeases reads every lease in dir (the .volboot directory) and judges
// each live or dead in one look, without waiting.
//
// The rule: the lister first creates a temporary file in the leases
// directory and takes its modification time as "now". Both that stamp and
// each lease file's stamp are set by the same filesystem when the file is
// written, so comparing them compares one clock with itself, not this
// host's clock with the writer's. A lease whose file is older than the TTL
// is dead. A lease written on this machine (same host, boot and pid
// namespace) by a process that is gone is dead at once. A file that does
// not parse but is recent counts as live with an unknown generation: gc
// must then keep every generation. (On a filesystem that stamps times with
// each client's clock, the rule degrades to comparing client clocks, which
// the TTL's margin must absorb.)
//
// The listing is a snapshot. A worker that starts after it may pick a
// generation the caller is about to remove, so a worker must write its lease
// before it starts using a generation, and gc must re-check the leases after
// it has made a generation unreachable and before it deletes the files.
func ListLeases(dir string, o ListOptions) ([]LeaseEntry, error) {
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	o.Identity = fillIdentity(o.Identity)
	ldir := filepath.Join(dir, "leases")
	ents, err := os.ReadDir(ldir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list use-leases: %w", err)
	}
	now, err := fsNow(ldir)
	if err != nil {
		return nil, err
	}
	var out []LeaseEntry
	for _, e := range ents {
		name := e.Name()
		if _, tmp := atomicfile.ParseTempName(name); tmp || !strings.HasSuffix(name, ".json") {
			continue
		}
		ent := LeaseEntry{Path: filepath.Join(ldir, name), WorkerID: strings.TrimSuffix(name, ".json")}
		data, mtime, err := readRecordFile(ent.Path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released while we listed
		}
		if err != nil && mtime.IsZero() {
			return nil, fmt.Errorf("use-lease: %w", err)
		}
		ent.Age = now.Sub(mtime)
		if err == nil {
			var rec LeaseRecord
			rec, err = ParseLease(data)
			if err == nil && rec.WorkerID != ent.WorkerID {
				err = fmt.Errorf("field \"worker_id\": %q does not match the file name", rec.WorkerID)
			}
			if err == nil {
				ent.Record = &rec
			}
		}
		if err != nil {
			ent.Err = fmt.Errorf("%s: %w", ent.Path, err)
		}
		switch {
		case ent.Age > o.TTL:
			ent.Reason = fmt.Sprintf("dead: not refreshed for %s (TTL %s)", ent.Age.Round(time.Millisecond), o.TTL)
		case ent.Record != nil:
			if gone, why := processGone(ent.Record.Identity, o.Identity); gone {
				ent.Reason = "dead: " + why
				break
			}
			ent.Live = true
			ent.Reason = fmt.Sprintf("live: refreshed %s ago", max(ent.Age, 0).Round(time.Millisecond))
		default:
			ent.Live = true
			ent.Reason = "live (recent, but unreadable: generation unknown)"
		}
		out = append(out, ent)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].WorkerID < out[j].WorkerID })
	return out, nil
}

// ListLive returns the live entries of ListLeases.
func ListLive(dir string, o ListOptions) ([]LeaseEntry, error) {
	all, err := ListLeases(dir, o)
	if err != nil {
		return nil, err
	}
	live := all[:0]
	for _, e := range all {
		if e.Live {
			live = append(live, e)
		}
	}
	return live, nil
}

// fsNow returns the filesystem's idea of now in dir: the modification time
// of a file it just created there.
func fsNow(dir string) (time.Time, error) {
	f, err := atomicfile.Create(filepath.Join(dir, "probe"), 0o644)
	if err != nil {
		return time.Time{}, fmt.Errorf("read the volume's clock in %s: %w", dir, err)
	}
	defer f.Abort()
	info, err := f.Stat()
	if err != nil {
		return time.Time{}, fmt.Errorf("read the volume's clock in %s: %w", dir, err)
	}
	return info.ModTime(), nil
}
