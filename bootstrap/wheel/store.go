// Package wheel verifies wheels and unpacks them into volboot's store
// (DESIGN.md §5): <store>/<sha256>/ holds one wheel's files exactly as the
// zip lays them out, each checked against RECORD, with bytecode precompiled,
// and a ".complete" manifest written last that lists every file (so building
// a generation never walks the store).
//
// Safety (rule 5): a wheel is refused, before anything appears under its
// final name, for entries that leave their target ("..", absolute paths,
// links or other non-regular files), duplicate entries, a zip bomb, a
// Wheel-Version major other than 1, a .dist-info name or METADATA name or
// version that disagrees with the filename, a file whose sha256 or size
// disagrees with RECORD, and a file RECORD does not list. The caller has
// already verified the whole file's size and sha256; the store trusts that
// digest to name the entry.
//
// Atomicity (rule 1): a wheel is unpacked into a temporary directory beside
// its final name (atomicfile.TempName), compiled there, given its .complete
// manifest, synced and renamed into place. Two workers racing for one entry
// each produce the same content; the loser discards its copy.
//
// Concurrency: a Store is safe for concurrent use; Unpack keeps up to Jobs
// file creations in flight because on a network filesystem each create is a
// round trip.
package wheel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zip"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/pep425"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/trash"
)

// CompleteName is the manifest file whose presence marks a store entry
// complete. A wheel may not contain a top-level file of that name.
const CompleteName = ".complete"

// ManifestSchema is the version of the .complete manifest format volboot
// writes (see manifest.go); Open also reads schema 1.
const ManifestSchema = 2

// Limits bound what a wheel may unpack to (zip bomb defence).
type Limits struct {
	// MaxUnpacked caps the total uncompressed size. Default 64 GiB.
	MaxUnpacked int64
	// MaxRatio caps uncompressed/compressed size for wheels whose
	// uncompressed total exceeds RatioFloor. Default 100 (real wheels,
	// text-heavy ones included, stay well below 20).
	MaxRatio float64
	// RatioFloor: smaller wheels are not ratio-checked (a tiny wheel of
	// zeros is harmless). Default 256 MiB.
	RatioFloor int64
	// MaxFiles caps the number of entries. Default 1,000,000.
	MaxFiles int
}

func (l Limits) withDefaults() Limits {
	if l.MaxUnpacked <= 0 {
		l.MaxUnpacked = 64 << 30
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = 100
	}
	if l.RatioFloor <= 0 {
		l.RatioFloor = 256 << 20
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = 1_000_000
	}
	return l
}

// SyncMode says how a new store entry (or generation) is made durable
// before it is renamed into place (rule 1).
type SyncMode int

const (
	// SyncAuto, the default, is SyncClose on MooseFS, SyncFS where the
	// filesystem's syncfs(2) is known to reach stable storage and
	// SyncFiles elsewhere (other FUSE, SMB, unknown types): see Resolve.
	SyncAuto SyncMode = iota
	// SyncFiles fsyncs every file as it is written, from the worker pool
	// (so the writeback overlaps decompression), and every directory
	// before the rename. Only this entry's data is flushed.
	SyncFiles
	// SyncFS flushes the whole filesystem once with syncfs(2) before the
	// rename: fewer calls, but it also waits for everyone else's dirty data.
	SyncFS
	// SyncNone relies on the kernel's writeback (like pip). A host crash
	// may leave a complete-looking entry with missing data, which only
	// status --verify would notice. For throwaway directories.
	SyncNone
	// SyncClose relies on a filesystem whose close(2) returns once the
	// file's data is on its servers and whose metadata calls are durable
	// when they return (MooseFS: fileops.Filesystem.FlushOnClose): every
	// close's error is checked, and nothing is fsynced, file or
	// directory. Like SyncFiles, each file is durable on its own, so the
	// records of finished work (batch logs, bytecode journals) hold.
	SyncClose
)

// PerFile reports whether each file is durable once written, before the
// entry or generation is complete (SyncFiles, SyncClose): what resumed
// work may trust of a dead writer's records.
func (m SyncMode) PerFile() bool { return m == SyncFiles || m == SyncClose }

// FsyncFiles reports whether each file is fsynced as it is written.
func (m SyncMode) FsyncFiles() bool { return m == SyncFiles }

// Store unpacks wheels into Dir (<volume>/.volboot/store).
type Store struct {
	Dir string
	// Jobs is how many file operations Unpack keeps in flight when Ops
	// is nil. Default: fileops.DefaultJobs(Dir).
	Jobs int
	// Ops schedules the store's file operations; a sync shares one with
	// the generation builder so that both together respect one bound.
	// Nil: each Unpacker makes its own from Jobs.
	Ops *fileops.Scheduler
	// Limits bound each wheel's unpacked size.
	Limits Limits
	// Compiler precompiles bytecode into each new entry; nil skips it.
	Compiler *Compiler
	// Logger receives progress at debug level; nil means zap.NewNop.
	Logger *zap.Logger
	// Sync is the durability mode; the default is SyncAuto.
	Sync SyncMode
	// Trash receives trees the store gives up (a failed unpack, an entry
	// set aside), so that their removal costs the caller one rename; nil
	// removes them at once.
	Trash *trash.Can
	// Adopt, when set, is asked about each partial entry another writer
	// left; those it allows are resumed rather than unpacked anew (see
	// resume.go).
	Adopt func(atomicfile.TempInfo, fs.DirEntry) bool

	partialsOnce   sync.Once
	partialsMu     sync.Mutex
	partials       map[string][]string // sha256 -> staging directories to adopt
	resumedEntries atomic.Int64
	keptFiles      atomic.Int64
}

// Source is one verified wheel file to unpack.
type Source struct {
	Path     string // the wheel file, e.g. <volume>/cache/wheels/<sha256>.whl
	Filename string // the wheel's real filename (name-version-tags.whl)
	SHA256   string // lowercase hex digest of the whole file, already verified
	Size     int64  // the file's size when known: Unpacker.UnpackedBytes counts it
}

// File is one file of a store entry.
type File struct {
	Path string `json:"path"` // relative to the entry, '/'-separated, as in the zip
	Size int64  `json:"size"`
	// Hash is RECORD's "alg=digest" for wheel files; empty for bytecode
	// volboot compiled and for RECORD itself.
	Hash string `json:"hash,omitempty"`
	Exec bool   `json:"exec,omitempty"`
	// Bytecode marks a .pyc compiled into the store, not from the wheel.
	Bytecode bool `json:"bytecode,omitempty"`
}

// Entry is a complete store entry: the contents of its .complete manifest.
type Entry struct {
	Schema        int          `json:"schema"`
	SHA256        string       `json:"sha256"`
	Filename      string       `json:"filename"`
	Name          string       `json:"name"`    // as METADATA spells it
	Version       string       `json:"version"` // as METADATA spells it
	DistInfo      string       `json:"dist_info"`
	Data          string       `json:"data,omitempty"` // the .data directory, if any
	RootIsPurelib bool         `json:"root_is_purelib"`
	CacheTag      string       `json:"cache_tag,omitempty"` // bytecode's tag, e.g. cpython-311
	EntryPoints   []EntryPoint `json:"entry_points,omitempty"`
	Files         []File       `json:"files,omitempty"` // in the JSON in schema 1 only: schema 2 lists them one per line after it
	// Small describes the entry's blob of small files (smallblob.go); nil
	// when it has none (made by an older volboot, or see there).
	Small *SmallBlob `json:"small,omitempty"`

	// Dir is the entry's directory; not stored in the manifest, so a
	// volume renamed since keeps working.
	Dir string `json:"-"`
}

func (s *Store) jobs() int {
	if s.Jobs > 0 {
		return s.Jobs
	}
	return fileops.DefaultJobs(s.Dir)
}

// ops is the scheduler of the store's file operations.
func (s *Store) ops() *fileops.Scheduler {
	if s.Ops != nil {
		return s.Ops
	}
	return fileops.New(s.jobs(), perDirCreates)
}

// perDirCreates is how many creates one directory of an entry has in
// flight. The kernel holds the directory's lock only across the create
// itself; a second file in flight overlaps its write and close (on
// MooseFS two more round trips) with the next create.
const perDirCreates = 2

func (s *Store) logger() *zap.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return zap.NewNop()
}

// EntryDir is where the entry for a wheel with this digest lives.
func (s *Store) EntryDir(sha string) string { return filepath.Join(s.Dir, sha) }

// Open reads a complete entry's manifest. It returns an error wrapping
// fs.ErrNotExist when the entry is absent or incomplete.
func (s *Store) Open(sha string) (*Entry, error) {
	if !isHexDigest(sha) {
		return nil, fmt.Errorf("store entry %q: not a sha256 hex digest", sha)
	}
	dir := s.EntryDir(sha)
	b, err := os.ReadFile(filepath.Join(dir, CompleteName))
	if err != nil {
		return nil, fmt.Errorf("store entry %s: %w", dir, err)
	}
	e, err := decodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("store entry %s: manifest %s: %w", dir, CompleteName, err)
	}
	if e.SHA256 != sha {
		return nil, fmt.Errorf("store entry %s: manifest %s: %w: it is for %s", dir, CompleteName, ErrBadManifest, e.SHA256)
	}
	e.Dir = dir
	return e, nil
}

func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// OpenAll opens the entries for shas with many reads in flight (on a
// network filesystem each is a round trip). Entries and errors are indexed
// like shas; onMiss, if not nil, is called (from any goroutine) for each
// entry that does not open.
func (s *Store) OpenAll(shas []string, onMiss func(i int, err error)) ([]*Entry, []error) {
	out := make([]*Entry, len(shas))
	errs := make([]error, len(shas))
	var g errgroup.Group
	g.SetLimit(s.jobs())
	for i, sha := range shas {
		g.Go(func() error {
			out[i], errs[i] = s.Open(sha)
			if errs[i] != nil && onMiss != nil {
				onMiss(i, errs[i])
			}
			return nil
		})
	}
	g.Wait()
	return out, errs
}

// Unpack makes sure the store holds an entry for each source, unpacking
// those it lacks. Wheels are unpacked concurrently, bytecode for all of
// them is compiled in one interpreter run, and each entry then appears
// atomically. It returns one Entry per source (nil for a failed one) and an
// error joining every failure, each naming its wheel. Sources that
// succeeded are committed even when others fail.
func (s *Store) Unpack(ctx context.Context, srcs ...Source) ([]*Entry, error) {
	return s.UnpackEach(ctx, nil, srcs...)
}

// UnpackEach is Unpack that also calls onDone (when not nil) for each
// source as soon as its entry is in the store or it failed, with the
// source's index: a caller can use the first entries while the others
// still unpack. onDone is called from the unpack's goroutines, possibly
// several at once, and must not block for long.
func (s *Store) UnpackEach(ctx context.Context, onDone func(i int, e *Entry, err error), srcs ...Source) ([]*Entry, error) {
	u, err := s.NewUnpacker(ctx)
	if err != nil {
		return nil, err
	}
	errs := make([]error, len(srcs))
	// Entries already there are read with many in flight: a boot that
	// changes one wheel of 160 reads 159 manifests. The first entry found
	// missing starts the bytecode compiler (an interpreter and its pool,
	// tens of milliseconds) while the other manifests are still read.
	shas := make([]string, len(srcs))
	for i, src := range srcs {
		shas[i] = src.SHA256
	}
	out, openErrs := s.OpenAll(shas, func(i int, err error) {
		s.setAsideBad(srcs[i], err)
		u.startCompiler()
	})
	var todo []int
	for i := range srcs {
		switch {
		case out[i] != nil:
		case errors.Is(openErrs[i], ErrNewerManifest):
			errs[i] = fmt.Errorf("wheel %s: %w", srcs[i].Filename, openErrs[i])
		default:
			todo = append(todo, i)
		}
	}
	// Biggest wheels first, so a large one does not start last and finish
	// alone.
	sizes := make(map[int]int64, len(todo))
	for _, i := range todo {
		if st, err := os.Stat(srcs[i].Path); err == nil {
			sizes[i] = st.Size()
		}
	}
	slices.SortStableFunc(todo, func(a, b int) int { return cmp.Compare(sizes[b], sizes[a]) })
	if onDone != nil {
		u.OnDone(func(k int, _ Source, e *Entry, err error) { onDone(todo[k], e, err) })
		queued := make(map[int]bool, len(todo))
		for _, i := range todo {
			queued[i] = true
		}
		for i := range srcs {
			if !queued[i] {
				onDone(i, out[i], errs[i])
			}
		}
	}
	for _, i := range todo {
		u.Add(srcs[i])
	}
	got, uerrs := u.Wait()
	for k, i := range todo {
		out[i], errs[i] = got[k], uerrs[k]
	}
	return out, errors.Join(errs...)
}

// setAsideBad moves aside the entry of src when err says its manifest was
// read but is not one (damaged, cut short): the entry is content-addressed,
// so it is unpacked again. Generations keep their hard links to its files.
// Read errors (EIO, ESTALE) and a newer volboot's manifests are left
// alone: the unpack then fails, naming them.
func (s *Store) setAsideBad(src Source, err error) {
	if !errors.Is(err, ErrBadManifest) {
		return
	}
	s.logger().Warn("store entry unreadable; unpacking it again", zap.String("wheel", src.Filename), zap.Error(err))
	s.Trash.Discard(s.EntryDir(src.SHA256))
}

// An Unpacker unpacks wheels into its store as they are handed to it, for
// a caller that learns of them one at a time (as their downloads finish).
// Wheels are taken in the order added, a few at a time; they share one
// bound on file operations in flight and one bytecode compiler, which
// compiles one wheel while the next is extracted. A wheel whose entry is
// already complete is not unpacked again.
//
// Add may be called from any goroutine until Wait, which must be called
// exactly once, by the owner, and waits for every goroutine the Unpacker
// started. Cancelling the context passed to NewUnpacker stops the work;
// unstarted wheels then fail with the context's error.
type Unpacker struct {
	s    *Store
	ctx  context.Context
	mode SyncMode
	ops  *fileops.Scheduler // file operations in flight, across all wheels

	compilerOnce sync.Once
	sess         *compileSession
	sessErr      error

	mu       sync.Mutex
	wake     *sync.Cond
	srcs     []Source
	next     int  // the first source no worker has taken
	closed   bool // Wait was called: no more sources
	out      []*Entry
	errs     []error
	ended    int // wheels unpacked or failed
	unpacked int // wheels unpacked
	// unpackedBytes sums the Size of the sources unpacked.
	unpackedBytes int64

	workers  sync.WaitGroup // extract, in order
	finishes sync.WaitGroup // compile and commit, after extract

	// onDone, when set (OnDone), hears of each wheel as it ends.
	onDone func(i int, src Source, e *Entry, err error)

	start                    time.Time
	extractNs, compileWaitNs atomic.Int64
}

// unpackWorkers is how many wheels extract at once. Each already keeps
// many file operations in flight; a few at once overlap one wheel's reads
// and verification with another's writes.
const unpackWorkers = 4

// NewUnpacker starts an Unpacker. Its workers wait for wheels until Wait.
func (s *Store) NewUnpacker(ctx context.Context) (*Unpacker, error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create store %s: %w", s.Dir, err)
	}
	u := &Unpacker{s: s, ctx: ctx, mode: s.Sync.Resolve(s.Dir), ops: s.ops(), start: time.Now()}
	u.wake = sync.NewCond(&u.mu)
	for range unpackWorkers {
		u.workers.Add(1)
		go u.work()
	}
	return u, nil
}

// OnDone makes the Unpacker call f as each wheel added ends, with its
// index as Add returned it and its entry (complete in the store) or its
// error, so that a caller can use an
// entry before the rest are unpacked (the reconciler links it into the
// generation it is building). f is called from the Unpacker's goroutines,
// possibly several at once, and must not block for long: it holds up the
// wheel's worker. Call OnDone before the first Add.
func (u *Unpacker) OnDone(f func(i int, src Source, e *Entry, err error)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.srcs) > 0 {
		panic("wheel: Unpacker.OnDone after Add")
	}
	u.onDone = f
}

// Add hands src to the Unpacker and returns its index in Wait's results.
// It does not block.
func (u *Unpacker) Add(src Source) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		panic("wheel: Unpacker.Add after Wait")
	}
	u.srcs = append(u.srcs, src)
	u.out = append(u.out, nil)
	u.errs = append(u.errs, nil)
	u.wake.Signal()
	return len(u.srcs) - 1
}

// Wait waits for every wheel added to be unpacked (or to fail) and for the
// compiler to exit. It returns one Entry and one error per wheel, indexed
// as Add returned; each error names its wheel.
func (u *Unpacker) Wait() ([]*Entry, []error) {
	u.mu.Lock()
	u.closed = true
	u.wake.Broadcast()
	u.mu.Unlock()
	u.workers.Wait()
	u.finishes.Wait()
	if u.sess != nil {
		if err := u.sess.close(); err != nil && u.ctx.Err() != nil {
			// Cancelling the context kills the compiler (see
			// Compiler.start): the end of a stopped sync, not a fault.
			u.s.logger().Debug("bytecode compiler stopped with the unpack", zap.Error(err))
		} else if err != nil {
			// Every wheel's bytecode arrived, or its wheel failed already.
			u.s.logger().Warn("bytecode compiler", zap.Error(err))
		}
	}
	if len(u.srcs) > 0 {
		u.s.logger().Debug("store unpack", zap.Int("wheels", len(u.srcs)), zap.Duration("took", time.Since(u.start)),
			zap.Duration("extract_sum", time.Duration(u.extractNs.Load())), zap.Duration("compile_wait_sum", time.Duration(u.compileWaitNs.Load())))
	}
	return u.out, u.errs
}

// startCompiler starts the bytecode compiler once (an interpreter and its
// pool: tens of milliseconds), as soon as some wheel is known to need it.
func (u *Unpacker) startCompiler() {
	if u.s.Compiler != nil {
		u.compilerOnce.Do(func() { u.sess, u.sessErr = u.s.Compiler.start(u.ctx) })
	}
}

// take returns the next source to unpack, or false once Wait was called
// and none is left.
func (u *Unpacker) take() (int, Source, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for u.next == len(u.srcs) && !u.closed {
		u.wake.Wait()
	}
	if u.next == len(u.srcs) {
		return 0, Source{}, false
	}
	i := u.next
	u.next++
	return i, u.srcs[i], true
}

func (u *Unpacker) done(i int, e *Entry, err error) {
	u.mu.Lock()
	u.out[i], u.errs[i] = e, err
	u.ended++
	if e != nil {
		u.unpacked++
		u.unpackedBytes += u.srcs[i].Size
	}
	src, f := u.srcs[i], u.onDone
	u.mu.Unlock()
	if f != nil {
		f(i, src, e, err)
	}
}

// UnpackedBytes sums the Size of the wheels added whose entry is in the
// store: the unpacking's progress weighted by the wheels' sizes.
func (u *Unpacker) UnpackedBytes() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.unpackedBytes
}

// Pending is how many wheels added are not unpacked (or failed) yet.
func (u *Unpacker) Pending() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.srcs) - u.ended
}

// Unpacked is how many wheels added have their entry in the store.
func (u *Unpacker) Unpacked() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.unpacked
}

// work extracts wheels in the order added; each wheel's compile and commit
// go on in a goroutine of their own, so the worker extracts the next.
func (u *Unpacker) work() {
	defer u.workers.Done()
	for {
		i, src, ok := u.take()
		if !ok {
			return
		}
		if err := u.ctx.Err(); err != nil {
			u.done(i, nil, fmt.Errorf("wheel %s: %w", src.Filename, err))
			continue
		}
		// Callers looked for the entry already, but on a shared volume
		// another machine may have completed it since (during a long
		// download): one more open can save a whole unpack.
		e, err := u.s.Open(src.SHA256)
		switch {
		case err == nil:
			u.done(i, e, nil)
			continue
		case errors.Is(err, ErrNewerManifest):
			u.done(i, nil, fmt.Errorf("wheel %s: %w", src.Filename, err))
			continue
		}
		u.s.setAsideBad(src, err)
		u.startCompiler()
		if u.sessErr != nil {
			u.done(i, nil, fmt.Errorf("wheel %s: %w", src.Filename, u.sessErr))
			continue
		}
		t0 := time.Now()
		p, err := u.s.extract(u.ctx, src, u.ops, u.mode)
		u.extractNs.Add(int64(time.Since(t0)))
		if err != nil {
			u.done(i, nil, err)
			continue
		}
		u.finishes.Add(1)
		go func() {
			defer u.finishes.Done()
			e, err := u.finish(p)
			u.done(i, e, err)
		}()
	}
}

// finish compiles an extracted wheel's bytecode and commits its entry.
func (u *Unpacker) finish(p *pendingEntry) (*Entry, error) {
	if u.sess != nil {
		t1 := time.Now()
		err := u.sess.compile(u.ctx, p, u.ops, u.mode.FsyncFiles())
		u.compileWaitNs.Add(int64(time.Since(t1)))
		if err != nil {
			if u.ctx.Err() == nil {
				u.s.Trash.Discard(p.tmp) // else left to be resumed
			}
			return nil, fmt.Errorf("wheel %s: %w", p.src.Filename, err)
		}
	}
	return u.s.commit(p, u.ops, u.mode)
}

// pendingEntry is an extracted, verified wheel in its temporary directory.
type pendingEntry struct {
	src     Source
	tmp     string
	dirs    []string // relative directories, for SyncFiles
	entry   Entry
	resumed bool // tmp was taken over from another writer (resume.go)
	// present are the files a resumed tmp held when taken over
	// (presentFiles), '/'-separated relative paths.
	present map[string]bool
	// sources holds the bytes of the .py files to compile, by path, as
	// they were written, or read to be checked where a resumed unpack
	// kept them.
	sources map[string][]byte
	// small gathers the bytes of the files of the entry's blob
	// (smallblob.go); nil once the blob is written.
	small *smallFiles
}

// zipMember is a regular file of the wheel with its verified metadata.
type zipMember struct {
	f    *zip.File
	name string
	rec  RecordEntry
	exec bool
	// source: a .py file that gets bytecode; its bytes are kept as they
	// stream to disk, so the compiler never reads the file back.
	source bool
	// small: a file of the entry's blob (smallFile); its bytes are kept
	// the same way.
	small bool
}

// reservedTop are top-level names a wheel may not use: they are the
// store's own bookkeeping.
func reservedTop(name string) bool {
	return name == CompleteName || name == SmallBlobName || strings.HasPrefix(name, journalPrefix)
}

// checkName refuses zip entry names that could leave the target directory
// or that are ambiguous on disk.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if name[0] == '/' || (len(name) >= 2 && name[1] == ':') {
		return errors.New("absolute path")
	}
	// One pass over the bytes: manifests of a big stack hold 100k names,
	// all checked at every generation build.
	start := 0 // of the current component
	for i := 0; i <= len(name); i++ {
		if i < len(name) {
			c := name[i]
			switch {
			case c < 0x20 || c == 0x7f:
				// No packaging tool makes such names; refusing them keeps
				// every path printable and lets manifests list files one
				// per line.
				return fmt.Errorf("name contains control character %#02x", c)
			case c == '\\':
				return errors.New("name contains a backslash")
			case c != '/':
				continue
			}
		} else if name[i-1] == '/' {
			break // a directory name's trailing slash
		}
		switch name[start:i] {
		case "..":
			return errors.New("path climbs out of the wheel with ..")
		case ".", "":
			return errors.New("path has an empty or '.' component")
		}
		start = i + 1
	}
	return nil
}

// extract verifies one wheel and writes its files into a staging
// directory in the store, taking over a partial one another writer left
// when Adopt allows (resume.go). On any error the staging directory goes
// to the trash.
func (s *Store) extract(ctx context.Context, src Source, ops *fileops.Scheduler, mode SyncMode) (_ *pendingEntry, err error) {
	if !isHexDigest(src.SHA256) {
		return nil, fmt.Errorf("wheel %s: sha256 %q is not a lowercase hex digest", src.Filename, src.SHA256)
	}
	wf := func(format string, args ...any) error {
		return fmt.Errorf("wheel %s: "+format, append([]any{src.Filename}, args...)...)
	}
	wn, err := pep425.ParseWheelFilename(src.Filename)
	if err != nil {
		return nil, wf("%w", err)
	}
	fnName := pep508.NormalizeName(wn.Distribution)
	fnVer, err := pep440.Parse(wn.Version)
	if err != nil {
		return nil, wf("version %q in filename: %w", wn.Version, err)
	}

	f, err := os.Open(src.Path)
	if err != nil {
		return nil, wf("%w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, wf("%w", err)
	}
	zr, err := zip.NewReader(f, st.Size())
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, wf("not a zip file: %w", err)
	}
	lim := s.Limits.withDefaults()
	if len(zr.File) > lim.MaxFiles {
		return nil, wf("%d entries, more than the limit of %d", len(zr.File), lim.MaxFiles)
	}

	// Pass 1: names, types, duplicates, sizes, the dist-info directory.
	seen := make(map[string]bool, len(zr.File))
	dirs := map[string]bool{}
	var total uint64
	var files []*zip.File
	distInfos := map[string]bool{}
	datas := map[string]bool{}
	for _, zf := range zr.File {
		name := zf.Name
		if err := checkName(name); err != nil {
			return nil, wf("entry %q: %v", name, err)
		}
		isDir := strings.HasSuffix(name, "/")
		key := strings.TrimSuffix(name, "/")
		if seen[key] {
			return nil, wf("entry %q appears twice", name)
		}
		seen[key] = true
		mode := zf.Mode()
		if mode&fs.ModeSymlink != 0 {
			return nil, wf("entry %q is a symbolic link; links are refused", name)
		}
		if mode&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeCharDevice|fs.ModeIrregular) != 0 {
			return nil, wf("entry %q is not a regular file (%v)", name, mode.Type())
		}
		top, _, _ := strings.Cut(key, "/")
		if reservedTop(top) {
			return nil, wf("entry %q uses a name the store reserves", name)
		}
		if strings.HasSuffix(top, ".dist-info") {
			distInfos[top] = true
		}
		if strings.HasSuffix(top, ".data") && strings.Contains(key, "/") {
			datas[top] = true
		}
		if isDir || mode.IsDir() {
			dirs[key] = true
			continue
		}
		total += zf.UncompressedSize64
		if total > uint64(lim.MaxUnpacked) {
			return nil, wf("unpacks to more than %d bytes (zip bomb limit)", lim.MaxUnpacked)
		}
		files = append(files, zf)
	}
	if total > uint64(lim.RatioFloor) && st.Size() > 0 && float64(total)/float64(st.Size()) > lim.MaxRatio {
		return nil, wf("unpacks to %d bytes from %d (ratio %.0f, limit %.0f): refused as a zip bomb",
			total, st.Size(), float64(total)/float64(st.Size()), lim.MaxRatio)
	}
	for _, zf := range files {
		key := zf.Name
		for d := path.Dir(key); d != "."; d = path.Dir(d) {
			if seen[d] && !dirs[d] {
				return nil, wf("entry %q is inside %q, which is a file", key, d)
			}
		}
	}
	if len(distInfos) != 1 {
		return nil, wf("has %d top-level .dist-info directories, want exactly 1", len(distInfos))
	}
	var distInfo string
	for d := range distInfos {
		distInfo = d
	}
	diName, diVer, ok := cutLast(strings.TrimSuffix(distInfo, ".dist-info"), "-")
	if !ok {
		return nil, wf("%s is not name-version.dist-info", distInfo)
	}
	if err := sameNameVersion(fnName, fnVer, diName, diVer); err != nil {
		return nil, wf("%s: %v", distInfo, err)
	}
	stem := strings.TrimSuffix(distInfo, ".dist-info")
	dataDir := ""
	for d := range datas {
		if d != stem+".data" {
			return nil, wf("data directory %s does not match %s", d, distInfo)
		}
		dataDir = d
	}

	byName := make(map[string]*zip.File, len(files))
	for _, zf := range files {
		byName[zf.Name] = zf
	}
	readSmall := func(rel string) ([]byte, error) {
		zf := byName[distInfo+"/"+rel]
		if zf == nil {
			return nil, fmt.Errorf("%s/%s is missing", distInfo, rel)
		}
		if zf.UncompressedSize64 > 64<<20 {
			return nil, fmt.Errorf("%s/%s is larger than 64 MiB", distInfo, rel)
		}
		rc, err := zf.Open()
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", distInfo, rel, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, 64<<20+1))
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", distInfo, rel, err)
		}
		return b, nil
	}
	wheelData, err := readSmall("WHEEL")
	if err != nil {
		return nil, wf("%v", err)
	}
	wi, err := ParseWheelInfo(wheelData)
	if err != nil {
		return nil, wf("%s/WHEEL: %v", distInfo, err)
	}
	metaData, err := readSmall("METADATA")
	if err != nil {
		return nil, wf("%v", err)
	}
	mh, err := ParseHeaders(metaData)
	if err != nil {
		return nil, wf("%s/METADATA: %v", distInfo, err)
	}
	mName, n1 := getHeader(mh, "Name")
	mVer, n2 := getHeader(mh, "Version")
	if n1 != 1 || n2 != 1 {
		return nil, wf("%s/METADATA: want exactly one Name and one Version header", distInfo)
	}
	if err := sameNameVersion(fnName, fnVer, mName, mVer); err != nil {
		return nil, wf("%s/METADATA: %v", distInfo, err)
	}
	recData, err := readSmall("RECORD")
	if err != nil {
		return nil, wf("%v", err)
	}
	record, err := ParseRecord(recData)
	if err != nil {
		return nil, wf("%s/%v", distInfo, err)
	}
	var eps []EntryPoint
	if zf := byName[distInfo+"/entry_points.txt"]; zf != nil {
		b, err := readSmall("entry_points.txt")
		if err != nil {
			return nil, wf("%v", err)
		}
		if eps, err = ParseEntryPoints(b); err != nil {
			return nil, wf("%s/%v", distInfo, err)
		}
	}

	// Every file must be in RECORD with a hash and the size the zip
	// declares; RECORD and its signatures are exempt (they cannot hash
	// themselves).
	exempt := map[string]bool{distInfo + "/RECORD": true, distInfo + "/RECORD.jws": true, distInfo + "/RECORD.p7s": true}
	members := make([]zipMember, 0, len(files))
	for _, zf := range files {
		m := zipMember{f: zf, name: zf.Name, exec: zf.Mode()&0o111 != 0}
		_, m.source = compileName(distInfo, dataDir, zf.Name)
		m.small = smallFile(dataDir, zf.Name, int64(zf.UncompressedSize64))
		if dataDir != "" && strings.HasPrefix(zf.Name, dataDir+"/") {
			kind, _, _ := strings.Cut(strings.TrimPrefix(zf.Name, dataDir+"/"), "/")
			switch kind {
			case "purelib", "platlib", "headers", "data":
			case "scripts":
				m.exec = true // pip makes every script executable
			default:
				return nil, wf("entry %q: unknown .data category %q (want purelib, platlib, scripts, headers or data)", zf.Name, kind)
			}
		}
		rec, ok := record[zf.Name]
		if exempt[zf.Name] {
			m.rec = RecordEntry{Path: zf.Name, Size: -1}
		} else if !ok {
			return nil, wf("entry %q is not listed in RECORD", zf.Name)
		} else if rec.Algorithm == "" {
			return nil, wf("entry %q has no hash in RECORD", zf.Name)
		} else if rec.Size >= 0 && uint64(rec.Size) != zf.UncompressedSize64 {
			return nil, wf("entry %q: RECORD says %d bytes, the zip says %d", zf.Name, rec.Size, zf.UncompressedSize64)
		} else {
			m.rec = rec
		}
		members = append(members, m)
	}
	if err := ctx.Err(); err != nil {
		return nil, wf("%w", err)
	}

	// Pass 2: write into a staging directory beside the final name.
	final := s.EntryDir(src.SHA256)
	tmp := stagingDir(final)
	resumed := s.takePartial(src.SHA256, tmp)
	if !resumed {
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return nil, wf("create %s: %w", tmp, err)
		}
	}
	defer func() {
		// Cancelled or fenced: what is written stays for the next writer
		// to resume (resume.go). Anything else failed for good.
		if err != nil && ctx.Err() == nil {
			s.Trash.Discard(tmp)
		}
	}()
	for _, zf := range files {
		for d := path.Dir(zf.Name); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	if err := ops.MakeDirs(ctx, tmp, dirs); err != nil {
		return nil, wf("%w", err)
	}
	var present map[string]bool // files a resumed entry holds already
	if resumed {
		present = presentFiles(ctx, tmp, dirs, ops)
	}
	// Large files first so one big shared object does not finish last alone.
	slices.SortFunc(members, func(a, b zipMember) int {
		if a.f.UncompressedSize64 != b.f.UncompressedSize64 {
			if a.f.UncompressedSize64 > b.f.UncompressedSize64 {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]File, len(members))
	sources := make([][]byte, len(members))
	small := newSmallFiles()
	var kept atomic.Int64
	g := ops.Group(ctx)
	for i, m := range members {
		key := memberKey(m)
		if present[m.name] {
			// Checked by reading it, not created: not held to its
			// directory's turn (resume.go, presentFiles).
			key = m.name
		}
		g.Go(key, func() error {
			fl, k, data, err := writeMember(tmp, m, mode, resumed, present[m.name])
			if err != nil {
				return wf("entry %q: %v", m.name, err)
			}
			if k {
				kept.Add(1)
			}
			out[i] = fl
			if m.source {
				sources[i] = data
			}
			if m.small && data != nil {
				small.add(m.name, data)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if resumed {
		s.resumedEntries.Add(1)
		s.keptFiles.Add(kept.Load())
		s.logResumed(src, int(kept.Load()), len(members))
	}
	if err := ctx.Err(); err != nil {
		return nil, wf("%w", err)
	}
	bySource := map[string][]byte{}
	for i, m := range members {
		if sources[i] != nil {
			bySource[m.name] = sources[i]
		}
	}
	slices.SortFunc(out, func(a, b File) int { return strings.Compare(a.Path, b.Path) })

	dirList := make([]string, 0, len(dirs)+1)
	for d := range dirs {
		dirList = append(dirList, d)
	}
	dirList = append(dirList, ".")
	p := &pendingEntry{src: src, tmp: tmp, dirs: dirList, resumed: resumed, present: present, sources: bySource, small: small, entry: Entry{
		Schema:        ManifestSchema,
		SHA256:        src.SHA256,
		Filename:      src.Filename,
		Name:          mName,
		Version:       mVer,
		DistInfo:      distInfo,
		Data:          dataDir,
		RootIsPurelib: wi.RootIsPurelib,
		EntryPoints:   eps,
		Files:         out,
	}}
	s.logger().Debug("unpacked wheel", zap.String("wheel", src.Filename), zap.Int("files", len(out)), zap.Uint64("bytes", total))
	return p, nil
}

// memberKey is the scheduling key of a member's write (fileops): its
// directory, whose creates the kernel serializes anyway, except for a big
// file, whose time goes to streaming data, not to its create. Ten shared
// libraries of a CUDA wheel sit in one directory: one at a time they would
// write at one stream's speed.
func memberKey(m zipMember) string {
	if m.f.UncompressedSize64 >= bigMember {
		return m.name
	}
	return path.Dir(m.name)
}

// bigMember is the size from which a member's write is not held to its
// directory's turn.
const bigMember = 1 << 20

// writeMember writes one zip member to dir and verifies it against RECORD
// while it streams. In a resumed entry, a file already there (present: a
// listing found it, so no create is tried first) is kept when it is
// provably the member (kept is true) and replaced otherwise. For a member
// marked source or small, its bytes are returned too.
func writeMember(dir string, m zipMember, mode SyncMode, resumed, present bool) (_ File, kept bool, data []byte, _ error) {
	perm := os.FileMode(0o644)
	if m.exec {
		perm = 0o755
	}
	dst := filepath.Join(dir, filepath.FromSlash(m.name))
	var w *os.File
	var err error
	if !present {
		w, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	}
	if resumed && (present || errors.Is(err, fs.ErrExist)) {
		if fl, src, ok := keepWritten(dst, m, mode.FsyncFiles()); ok {
			return fl, true, src, nil
		}
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return File{}, false, nil, err
		}
		w, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	}
	if err != nil {
		return File{}, false, nil, err
	}
	fl, src, err := fillMember(w, dst, m, mode, perm)
	return fl, false, src, err
}

// fillMember streams m into w (just created at dst) and closes it. A
// source or small member's bytes are returned as well.
func fillMember(w *os.File, dst string, m zipMember, mode SyncMode, perm os.FileMode) (File, []byte, error) {
	rc, err := m.f.Open()
	if err != nil {
		w.Close()
		return File{}, nil, err
	}
	defer rc.Close()
	var hw io.Writer = w
	src := keepBuffer(m)
	if src != nil {
		hw = io.MultiWriter(w, src)
	}
	var h interface {
		io.Writer
		Sum([]byte) []byte
	}
	if m.rec.Algorithm != "" {
		hh, _ := newHash(m.rec.Algorithm)
		h = hh
		hw = io.MultiWriter(hw, hh)
	}
	bp := copyBufs.Get().(*[]byte)
	// The zip reader itself refuses more bytes than the header declares.
	n, err := io.CopyBuffer(hw, io.LimitReader(rc, int64(m.f.UncompressedSize64)+1), *bp)
	copyBufs.Put(bp)
	switch {
	case err != nil:
	case mode.FsyncFiles():
		err = w.Sync()
	case mode == SyncFS && n >= writebackMin:
		// Start writing this file back now, without waiting. Otherwise a
		// machine with RAM to spare keeps the whole stack dirty until the
		// entry's syncfs, which then waits for all of it while the CPU
		// idles. Only a hint: syncfs still decides durability.
		unix.SyncFileRange(int(w.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return File{}, nil, err
	}
	if uint64(n) != m.f.UncompressedSize64 {
		return File{}, nil, fmt.Errorf("holds %d bytes, the zip header says %d", n, m.f.UncompressedSize64)
	}
	if perm&0o111 != 0 && !fileops.CreateKeeps(perm) {
		// The umask dropped bits; executables must stay executable.
		if err := os.Chmod(dst, perm); err != nil {
			return File{}, nil, err
		}
	}
	fl := File{Path: m.name, Size: n, Exec: m.exec}
	if h != nil {
		sum := h.Sum(nil)
		if string(sum) != string(m.rec.Digest) {
			return File{}, nil, fmt.Errorf("%s %s does not match RECORD's %s", m.rec.Algorithm,
				EncodeDigest(m.rec.Algorithm, sum), EncodeDigest(m.rec.Algorithm, m.rec.Digest))
		}
		fl.Hash = EncodeDigest(m.rec.Algorithm, m.rec.Digest)
	}
	if src != nil {
		return fl, src.Bytes(), nil
	}
	return fl, nil, nil
}

// writebackMin is the size from which a file written under SyncFS has
// its writeback started at once (on the build machine the F5-sized stack
// unpacked in 5.6 s this way and in 6.1 s without; starting it for every
// small file as well was no faster than not at all).
const writebackMin = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// commit writes the manifest, syncs the entry and renames it into place.
func (s *Store) commit(p *pendingEntry, ops *fileops.Scheduler, mode SyncMode) (*Entry, error) {
	final := s.EntryDir(p.src.SHA256)
	s.writeSmallBlob(p, mode)
	if afterSmallBlob != nil {
		afterSmallBlob(p.tmp)
	}
	b, err := encodeManifest(&p.entry)
	if err != nil {
		s.Trash.Discard(p.tmp)
		return nil, err
	}
	if err := s.syncEntry(p, ops, mode); err != nil {
		s.Trash.Discard(p.tmp)
		return nil, fmt.Errorf("wheel %s: %w", p.src.Filename, err)
	}
	if err := atomicfile.Write(filepath.Join(p.tmp, CompleteName), b, 0o644); err != nil {
		s.Trash.Discard(p.tmp)
		return nil, fmt.Errorf("wheel %s: %w", p.src.Filename, err)
	}
	err = os.Rename(p.tmp, final)
	if err != nil {
		// Entries appear at their final name only complete, so what is
		// there without a manifest, or with one that does not parse, is
		// debris (a removal by an older volboot killed halfway): set it
		// aside and take the name. A complete entry (another worker
		// committed first) is taken below; read errors (EIO, ESTALE) may
		// hide a complete entry and leave it alone.
		if _, oerr := s.Open(p.src.SHA256); errors.Is(oerr, ErrBadManifest) || errors.Is(oerr, fs.ErrNotExist) {
			s.logger().Warn("an incomplete store entry holds the name; setting it aside", zap.String("wheel", p.src.Filename), zap.String("path", final), zap.Error(oerr))
			s.Trash.Discard(final)
			err = os.Rename(p.tmp, final)
		}
	}
	if err != nil {
		s.Trash.Discard(p.tmp)
		if e, oerr := s.Open(p.src.SHA256); oerr == nil {
			return e, nil
		}
		return nil, fmt.Errorf("wheel %s: rename into %s: %w (run volboot repair)", p.src.Filename, final, err)
	}
	if err := atomicfile.SyncDir(s.Dir); err != nil {
		return nil, fmt.Errorf("wheel %s: %w", p.src.Filename, err)
	}
	e := p.entry
	e.Dir = final
	return &e, nil
}

// syncEntry makes the entry durable per mode (resolved). Under SyncFiles
// every file was fsynced as it was written; the directories remain.
func (s *Store) syncEntry(p *pendingEntry, ops *fileops.Scheduler, mode SyncMode) error {
	switch mode {
	case SyncNone, SyncClose:
		return nil
	case SyncFS:
		return atomicfile.SyncFS(p.tmp)
	}
	return ops.FsyncAll(context.Background(), p.tmp, p.dirs)
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// sameNameVersion compares a name and version found inside the wheel with
// the filename's, both normalized.
func sameNameVersion(fnName string, fnVer pep440.Version, name, ver string) error {
	if pep508.NormalizeName(name) != fnName {
		return fmt.Errorf("name %q does not match the filename's %q", name, fnName)
	}
	v, err := pep440.Parse(ver)
	if err != nil {
		return fmt.Errorf("version %q: %v", ver, err)
	}
	if v.Equal(fnVer) {
		return nil
	}
	// The one accepted difference: a filename carrying a local label the
	// metadata lacks. flash-attn publishes its CUDA builds by renaming the
	// wheel file to 2.8.3+cu12torch2.8cxx11abiTRUE while METADATA and the
	// .dist-info stay 2.8.3; pip and uv install them. Any other mismatch,
	// and any local label inside that the filename does not carry, is refused.
	if v.Local() == "" && fnVer.Local() != "" && v.Equal(fnVer.Public()) {
		return nil
	}
	return fmt.Errorf("version %q does not match the filename's %q", ver, fnVer.String())
}
