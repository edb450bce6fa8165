package locallayout

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/pack"
	"github.com/volboot/volboot/bootstrap/trash"
	"github.com/volboot/volboot/bootstrap/wheel"
)

// A pack killed halfway is resumed, not redone (DESIGN.md §5.4, §5.8).
//
// Packing reads every small file of the generation from the store, a
// network round trip or more each on MooseFS: seconds to minutes, and
// under a kill loop a builder killed in it lost all of it. So BuildPack
// writes the pack in frames of frameItems records (pack.Writer.EndFrame)
// and keeps a copy of each frame it ends, named "<k>-<sha256 of its
// bytes>", in a staging directory of the packs directory named
// atomicfile.TempName("<generation>-<plan>.partial"), where plan digests
// everything the records are made of except file contents and mtimes
// (planDigest). A later builder of the same pack takes that directory over
// with one rename (when PackOptions.Adopt allows, as for store entries and
// generations: wheel/resume.go) and puts the frames it can prove first,
// going on from there (pack.Continue) instead of reading their files
// again.
//
// Why a kept frame is right:
//   - its bytes hash to the digest in its name, which its writer took from
//     the bytes it had in memory before it wrote the file (through a
//     temporary name, renamed: a kill leaves a temporary file, removed when
//     the directory is taken over); a file cut short or with holes (a
//     client dying with cached writes) does not hash to its name, and
//     neither does anything but those bytes;
//   - those bytes are the records of the same frame of the same plan: the
//     directory's name carries the plan's digest, and frame k holds records
//     k*frameItems up to the next frame's, a frame boundary of one pack
//     being the same in another (pack.Continue makes the bytes one writer
//     would have made);
//   - the contents read for it are the store files the plan names, which
//     are content-addressed (a store entry is named by its wheel's sha256
//     and its files checked against RECORD), so any builder reads the same
//     bytes, whether from the entries' blobs of small files or from the
//     files themselves (packblobs.go). Only mtimes can differ, for the
//     files of an entry without a blob (the others get a fixed one), when
//     the entry was unpacked again between two builders; the pack's mtimes are then those of two
//     unpacks of the same bytes, which nothing compares with the store
//     (volboot's bytecode is unchecked-hash, PEP 552) and which a local
//     tree and status --verify take from the pack itself.
//
// Only frames from the first on are kept, up to the first that fails: a
// frame's bytes need the ones before them, and a killed builder ended them
// in order. A fenced builder still running can no longer write into the
// directory taken from it (it writes through paths, and its directory's
// name is gone). Repair takes over no frames (PackOptions.Adopt is nil):
// they may hold what it is repairing. The directory goes to the trash once
// the pack is in place; a builder that fails for good leaves it for the
// reconciler, which trashes staging directories nobody wants.

// frameItems is how many records a frame of a pack holds: the files read
// in one window, so a kill loses at most one window of reads.
const frameItems = 512

// planDigest digests what a pack's records are made of, apart from the
// contents and mtimes of the files read from the store: the format, the
// frame size, the threshold, and each record's kind, path, mode, size,
// link or volume target, store file (relative to the volume) and, for a
// written file, its content; and, when some store entry has a blob of
// small files, which files get the fixed mtime (packblobs.go), so that a
// builder that knows no blobs leaves frames no other builder takes.
func planDigest(items []item, threshold int64) string {
	h := sha256.New()
	var b []byte
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	str(pack.Magic)
	b = binary.AppendUvarint(b, frameItems)
	b = binary.AppendUvarint(b, uint64(threshold))
	fixed := slices.ContainsFunc(items, func(it item) bool { return it.fixedMTime })
	if fixed {
		str("fixed-mtime")
	}
	h.Write(b)
	for _, it := range items {
		b = b[:0]
		k := it.kind()
		b = append(b, byte(k))
		str(it.path)
		b = binary.AppendUvarint(b, uint64(it.size))
		str(it.link)
		str(it.volume)
		str(it.readRel)
		if it.read == "" && (k == pack.File || k == pack.Exec) {
			d := sha256.Sum256(it.data)
			b = append(b, d[:]...)
		}
		if fixed {
			b = strconv.AppendBool(b, it.fixedMTime)
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// frameStage is where a pack's frames are kept while it is written: a
// staging directory of the packs directory, taken over from a killed
// builder or made at the first frame.
type frameStage struct {
	final  string // the staging directory's final name, a path in the packs directory
	dir    string // ours, once taken over or made; "" before
	frames map[int][]string
	broken bool // a frame could not be kept: keep no more
	trash  *trash.Can
	log    *zap.Logger
}

// takeFrames finds a staging directory of the pack planned as plan that
// adopt allows and takes it over; without one (or with adopt nil) the
// stage starts empty.
func takeFrames(dir, generation, plan string, adopt func(atomicfile.TempInfo, fs.DirEntry) bool, can *trash.Can, log *zap.Logger) *frameStage {
	s := &frameStage{final: filepath.Join(dir, generation+"-"+plan+wheel.PartialSuffix), trash: can, log: log}
	if adopt == nil {
		return s
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		ti, ok := atomicfile.ParseTempName(e.Name())
		if !ok || !e.IsDir() || ti.Final != filepath.Base(s.final) || !adopt(ti, e) {
			continue
		}
		mine := atomicfile.TempName(s.final)
		if os.Rename(filepath.Join(dir, e.Name()), mine) != nil {
			continue // another builder took it
		}
		wheel.Adopted(mine, log)
		s.dir = mine
		break
	}
	if s.dir == "" {
		return s
	}
	s.frames = map[int][]string{}
	ents, _ = os.ReadDir(s.dir)
	for _, e := range ents {
		k, sha, ok := strings.Cut(e.Name(), "-")
		n, err := strconv.Atoi(k)
		if ok && err == nil && n >= 0 && len(sha) == 64 {
			s.frames[n] = append(s.frames[n], e.Name())
		}
	}
	return s
}

// frame returns frame k's bytes when a kept copy of them hashes to its
// name.
func (s *frameStage) frame(k int) ([]byte, bool) {
	for _, name := range s.frames[k] {
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			continue
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) == name[strings.IndexByte(name, '-')+1:] {
			return data, true
		}
	}
	return nil, false
}

// keep keeps frame k's bytes for a builder that may take over after a
// kill. Failing to costs only that builder's reads: it is logged, and no
// later frame is kept (they could not be used without this one).
func (s *frameStage) keep(k int, data []byte) {
	if s.broken {
		return
	}
	if s.dir == "" {
		d := atomicfile.TempName(s.final)
		if err := os.Mkdir(d, 0o755); err != nil {
			s.broken = true
			s.log.Debug("could not keep a pack's frames for a next builder", zap.Error(err))
			return
		}
		s.dir = d
	}
	sum := sha256.Sum256(data)
	// No fsync: a frame lost or torn by a crash fails its digest and is
	// only read again.
	if err := atomicfile.WriteVolatile(filepath.Join(s.dir, fmt.Sprintf("%d-%s", k, hex.EncodeToString(sum[:]))), data, 0o644); err != nil {
		s.broken = true
		s.log.Debug("could not keep a pack's frame for a next builder", zap.Int("frame", k), zap.Error(err))
	}
}

// discard sends the staging directory to the trash once the pack is in
// place.
func (s *frameStage) discard() {
	if s.dir != "" {
		s.trash.Discard(s.dir)
	}
}
