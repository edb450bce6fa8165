// Package locallayout is the `local` layout of a generation (DESIGN.md
// §5.8): the generation's small files on the container's own disk,
// unpacked from a pack on the volume, its big files symbolic links to
// their store files on the volume. Python imports then cost local
// lookups instead of network round trips, and the container disk holds a
// fraction of the environment's bytes.
//
// BuildPack writes a generation's pack (whoever builds the generation);
// Materialize lays a pack out under the local directory at boot, or
// reuses the tree an earlier container left; Verify checks a local tree
// against its pack for status --verify; Choose decides the layout.
package locallayout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/pack"
	"github.com/volboot/volboot/bootstrap/trash"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
)

// writtenMTime is the mtime a pack gives the files it did not read from
// the store (launchers, RECORD, the skeleton), and the files of store
// entries that have a blob of small files (packblobs.go): a fixed one, so
// that two builders of one generation write the same bytes. No bytecode
// depends on them.
const writtenMTime = 315532800 * int64(time.Second) // 1980-01-01, the zip epoch

// DefaultThreshold is the size from which a file stays on the volume:
// below it, a file goes into the pack (the store's blobs of small files
// follow the same rule: pack.DefaultThreshold).
const DefaultThreshold = pack.DefaultThreshold

// PackRecord describes a generation's pack; the reconciler keeps it with
// the generation's record (state.json, boot records).
type PackRecord struct {
	SHA256     string `json:"sha256"`
	Size       int64  `json:"size"`       // bytes of the pack file
	Files      int    `json:"files"`      // files inside it
	Bytes      int64  `json:"bytes"`      // their bytes unpacked: the local tree's size
	Links      int    `json:"links"`      // files left on the volume
	Linked     int64  `json:"linked"`     // their bytes
	Threshold  int64  `json:"threshold"`  // files from this size stay on the volume
	Generation string `json:"generation"` // the generation it packs
}

// PackName is the pack's file name in the packs directory: the
// generation's id and the pack's sha256, so that gc can tell whose it is
// and a reader what its bytes must hash to.
func PackName(generation, sha string) string { return generation + "-" + sha + ".pack" }

// ParsePackName undoes PackName.
func ParsePackName(name string) (generation, sha string, ok bool) {
	base, ok := strings.CutSuffix(name, ".pack")
	if !ok {
		return "", "", false
	}
	generation, sha, ok = strings.Cut(base, "-")
	return generation, sha, ok && len(sha) == 64 && generation != ""
}

// PackOptions says what BuildPack packs.
type PackOptions struct {
	Volume     string // the volume's root; Sources below it become VolumeLink targets relative to it
	Dir        string // the packs directory on the volume
	Generation string
	// Skeleton writes the generation's skeleton (venv.WriteSkeleton) into
	// an empty directory on local disk; its files and links are packed as
	// they are.
	Skeleton func(dir string) error
	Files    []venv.PlannedFile
	// Scripts is the skeleton's scripts directory (bin): its files always
	// go into the pack, since a launcher finds its interpreter beside its
	// own real path.
	Scripts   string
	Threshold int64 // 0: DefaultThreshold
	Jobs      int   // store reads in flight; 0: 16
	Logger    *zap.Logger
	// Adopt, when set, is asked about each staging directory of frames
	// another builder of the same pack left (packframes.go): true lets
	// BuildPack take it over and keep the frames it can prove. The
	// reconciler passes the rule it uses for store entries.
	Adopt func(atomicfile.TempInfo, fs.DirEntry) bool
	// Trash receives the frames' staging directory once the pack is in
	// place; nil removes it at once.
	Trash *trash.Can
}

// Packed says whether a file of the generation goes into the pack: written
// files, scripts, and what pack.AlwaysPacked names (Python sources and
// bytecode, metadata) always; any other file below the threshold.
func Packed(f venv.PlannedFile, scripts string, threshold int64) bool {
	switch {
	case f.Source == "", f.Copied, f.Size < threshold:
		return true
	case strings.HasPrefix(f.Path, scripts+"/"):
		return true
	}
	return pack.AlwaysPacked(f.Path)
}

// BuildPack writes the pack of o.Generation into o.Dir under PackName and
// returns its record. The pack is written to a temporary name beside it,
// fsynced, and renamed into place once its digest is known: a reader
// never finds a pack half written under its name, and two builders of the
// same generation each publish a complete pack (the same name when their
// bytes agree). Small files are read from the store (o.Files' sources),
// many in flight, and written in path order, in frames that a builder
// taking over from a killed one keeps (packframes.go).
func BuildPack(ctx context.Context, o PackOptions) (*PackRecord, error) {
	if o.Threshold <= 0 {
		o.Threshold = DefaultThreshold
	}
	if o.Jobs <= 0 {
		o.Jobs = 16
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	start := time.Now()
	skel, err := os.MkdirTemp("", "volboot-skeleton-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(skel)
	if err := o.Skeleton(skel); err != nil {
		return nil, fmt.Errorf("pack generation %s: skeleton: %w", o.Generation, err)
	}
	items, err := skeletonItems(skel)
	if err != nil {
		return nil, fmt.Errorf("pack generation %s: skeleton: %w", o.Generation, err)
	}
	rec := &PackRecord{Threshold: o.Threshold, Generation: o.Generation}
	for _, f := range o.Files {
		it := item{path: f.Path, exec: f.Exec, size: f.Size, data: f.Data, mtime: writtenMTime}
		if f.Source != "" && f.Entry != nil {
			it.entry, it.rel = f.Entry, f.EntryPath
			it.fixedMTime = f.Entry.Small != nil
		}
		if f.Source != "" {
			rel, err := filepath.Rel(o.Volume, f.Source)
			if err != nil || !filepath.IsLocal(rel) {
				return nil, fmt.Errorf("pack generation %s: %s: its store file %s is not on the volume %s", o.Generation, f.Path, f.Source, o.Volume)
			}
			if Packed(f, o.Scripts, o.Threshold) {
				it.read, it.readRel = f.Source, filepath.ToSlash(rel)
			} else {
				it.volume = filepath.ToSlash(rel)
			}
		}
		items = append(items, it)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].path < items[j].path })
	for _, it := range items {
		if it.volume != "" {
			rec.Links++
			rec.Linked += it.size
		} else if k := it.kind(); k == pack.File || k == pack.Exec {
			rec.Files++
			rec.Bytes += it.size
		}
	}
	frames := (len(items) + frameItems - 1) / frameItems
	stage := takeFrames(o.Dir, o.Generation, planDigest(items, o.Threshold), o.Adopt, o.Trash, o.Logger)

	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("pack generation %s: %w", o.Generation, err)
	}
	tmp, err := atomicfile.Create(filepath.Join(o.Dir, PackName(o.Generation, "new")), 0o644)
	if err != nil {
		return nil, fmt.Errorf("pack generation %s: %w", o.Generation, err)
	}
	defer tmp.Abort()
	h := sha256.New()
	counted := &pack.CountingWriter{W: io.MultiWriter(tmp, h)}
	// The frames a killed builder kept, from the first on.
	kept := 0
	for ; kept < frames; kept++ {
		data, ok := stage.frame(kept)
		if !ok {
			break
		}
		if _, err := counted.Write(data); err != nil {
			return nil, fmt.Errorf("pack generation %s: %w", o.Generation, err)
		}
	}
	if kept > 0 {
		o.Logger.Info(fmt.Sprintf("pack of generation %s: %d of its %d frames were kept by a previous worker, not read again", o.Generation, kept, frames),
			zap.Int("kept", kept), zap.Int("frames", frames))
	}
	blobs := newBlobs(items[min(kept*frameItems, len(items)):], o.Jobs, o.Generation, o.Logger)
	defer blobs.wait()
	frame := &frameWriter{w: counted}
	var w *pack.Writer
	if kept == 0 {
		w, err = pack.NewWriter(frame)
	} else {
		// The last frame may be partial: what was kept ends with the plan.
		done := make([]pack.Entry, min(kept*frameItems, len(items)))
		for i, it := range items[:len(done)] {
			done[i] = pack.Entry{Kind: it.kind(), Path: it.path}
		}
		w, err = pack.Continue(frame, done)
	}
	if err != nil {
		return nil, fmt.Errorf("pack generation %s: %w", o.Generation, err)
	}
	// Read a frame's files at once, from their entries' blobs or many in
	// flight from the store (each is a round trip on a network volume),
	// then write them in order. The next frame's blobs are read meanwhile.
	readOne := 0
	for k := kept; k < frames; k++ {
		batch := items[k*frameItems : min((k+1)*frameItems, len(items))]
		if k == kept {
			blobs.prefetch(batch)
		}
		if k+1 < frames {
			blobs.prefetch(items[(k+1)*frameItems : min((k+2)*frameItems, len(items))])
		}
		var fromStore atomic.Int64
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(o.Jobs)
		for i := range batch {
			if batch[i].read == "" {
				continue
			}
			it := &batch[i]
			g.Go(func() error {
				if err := gctx.Err(); err != nil {
					return err
				}
				if data, ok := blobs.take(it); ok {
					it.data, it.mtime = data, writtenMTime
					return nil
				}
				fromStore.Add(1)
				data, mtime, err := readStoreFile(it.read)
				if err != nil {
					return fmt.Errorf("pack generation %s: %s: %w", o.Generation, it.path, err)
				}
				it.mtime = mtime
				if it.fixedMTime {
					it.mtime = writtenMTime
				}
				if int64(len(data)) != it.size {
					return fmt.Errorf("pack generation %s: %s: its store file %s has %d bytes, its manifest says %d (volboot repair)", o.Generation, it.path, it.read, len(data), it.size)
				}
				it.data = data
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		readOne += int(fromStore.Load())
		for i := range batch {
			it := &batch[i]
			blobs.done(it)
			switch it.kind() {
			case pack.Dir:
				err = w.Dir(it.path)
			case pack.Symlink:
				err = w.Symlink(it.path, it.link)
			case pack.VolumeLink:
				err = w.VolumeLink(it.path, it.volume, it.size)
			default:
				err = w.File(it.path, it.exec, it.mtime, it.data)
			}
			it.data = nil
			if err != nil {
				return nil, fmt.Errorf("pack generation %s: %w", o.Generation, err)
			}
		}
		if err := w.EndFrame(); err != nil {
			return nil, fmt.Errorf("pack generation %s: %w", o.Generation, err)
		}
		stage.keep(k, frame.take())
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("pack generation %s: %w", o.Generation, err)
	}
	rec.SHA256 = hex.EncodeToString(h.Sum(nil))
	rec.Size = counted.N
	final := filepath.Join(o.Dir, PackName(o.Generation, rec.SHA256))
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("pack generation %s: fsync: %w", o.Generation, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("pack generation %s: %w", o.Generation, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return nil, fmt.Errorf("pack generation %s: %w", o.Generation, err)
	}
	if err := atomicfile.SyncDir(o.Dir); err != nil {
		return nil, err
	}
	stage.discard()
	o.Logger.Info(fmt.Sprintf("packed generation %s: %d small files (%d MiB, %d MiB compressed; %d from store entries' blobs, %d read one by one), %d files left on the volume",
		o.Generation, rec.Files, rec.Bytes>>20, rec.Size>>20, blobs.read.Load(), readOne, rec.Links),
		zap.String("pack", final), zap.Duration("took", time.Since(start)),
		zap.Int64("from_blobs", blobs.read.Load()), zap.Int("read_one_by_one", readOne))
	return rec, nil
}

// item is one record of a pack being written.
type item struct {
	path    string
	exec    bool
	size    int64
	data    []byte
	read    string // a store file to read the content from
	readRel string // read, relative to the volume ('/'-separated)
	volume  string // a VolumeLink target
	link    string // a Symlink target
	dir     bool   // an empty directory
	mtime   int64
	// entry is the store entry of read and rel read's path in it.
	entry *wheel.Entry
	rel   string
	// fixedMTime: read's entry has a blob of small files, so the file
	// gets writtenMTime whether it is read from the blob or not.
	fixedMTime bool
}

// kind is the record it becomes.
func (it *item) kind() pack.Kind {
	switch {
	case it.dir:
		return pack.Dir
	case it.link != "":
		return pack.Symlink
	case it.volume != "":
		return pack.VolumeLink
	case it.exec:
		return pack.Exec
	}
	return pack.File
}

// frameWriter passes a pack's bytes on and keeps those of the current
// frame, for frameStage.keep.
type frameWriter struct {
	w     io.Writer
	frame []byte
}

func (f *frameWriter) Write(p []byte) (int, error) {
	f.frame = append(f.frame, p...)
	return f.w.Write(p)
}

// take returns the bytes written since the last take.
func (f *frameWriter) take() []byte {
	b := f.frame
	f.frame = nil
	return b
}

// readStoreFile reads a store file for a pack; tests replace it.
var readStoreFile = readWithMTime

// readWithMTime reads a file and its modification time through one open
// (on a network volume the fstat is answered with the open).
func readWithMTime(p string) ([]byte, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, 0, err
	}
	return data, fi.ModTime().UnixNano(), nil
}

// skeletonItems lists the files and links of a skeleton written to dir.
func skeletonItems(dir string) ([]item, error) {
	var out []item
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			ents, err := os.ReadDir(p)
			if err == nil && len(ents) == 0 {
				out = append(out, item{path: rel, dir: true})
			}
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, item{path: rel, link: t})
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, item{path: rel, exec: fi.Mode()&0o111 != 0, size: int64(len(data)), data: data, mtime: writtenMTime})
		return nil
	})
	return out, err
}

// errNoPack is returned by Materialize when the generation has no pack.
var errNoPack = errors.New("the generation has no pack on the volume")
