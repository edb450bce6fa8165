package wheel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/pack"
)

// The blob of an entry's small files (DESIGN.md §5.1, §5.8).
//
// A generation's pack (bootstrap/locallayout) holds its small files; read
// one by one from the store, each cost an open at the volume's metadata
// server (about a millisecond on MooseFS, whatever the concurrency), while
// the unpack had every one of those bytes in memory moments before. So
// when the store commits an entry it also writes SmallBlobName at the
// entry's top: the entry's files a pack may take (smallFile: below
// pack.DefaultThreshold, or what pack.AlwaysPacked names, or a script),
// bytecode included, in the pack format (bootstrap/pack: 'F' and 'X'
// records by their path in the entry, mtime 0, then the end record), in
// path order, one zstd frame. Packing then reads one file per entry.
//
// Contract:
//   - the blob is written into the staging directory before the manifest,
//     under the entry's durability mode (fsynced under SyncFiles, covered
//     by the entry's syncfs under SyncFS, its close checked under
//     SyncClose), and the manifest, written after it, describes it
//     (Entry.Small: its sha256, size, record count and bytes). A blob the
//     manifest does not describe is not used; so a blob cut short by a
//     kill, or left in a staging directory that another writer then takes
//     over, is never taken for complete, and nothing at an entry's final
//     name lacks its manifest anyway (rule 1);
//   - a reader (ReadSmallBlob) uses the blob only whole: the file's sha256
//     and size must be the manifest's, and every record must be a file the
//     manifest lists, of its size and mode, of its RECORD hash where the
//     manifest has one; anything else is an error, and the reader then
//     reads the entry's files one by one. A blob is an optimization: a
//     missing or damaged one never fails a pack or a sync;
//   - the blob holds every file smallFile selects, or the entry has no
//     blob: an entry whose small files exceed maxSmallBytes (their bytes
//     would stay in memory until the commit), or whose small files the
//     unpack did not all have in memory, or whose blob could not be
//     written, is committed without one (a warning for the last);
//   - entries made by an older volboot have no blob (their manifests have
//     no "small"), and an older volboot ignores both the field and the
//     file: neither is one of the entry's files, so generations never
//     link the blob, status --verify and repair check the manifest's
//     files only, and gc removes the blob with its entry's directory.
//     A wheel may not ship a top-level file of that name (reservedTop).
//
// Concurrency: the bytes are gathered while the entry's members are
// written, many at once (smallFiles is safe for concurrent use), and the
// blob is written by the one goroutine that commits the entry, in its own
// staging directory: two writers racing for one wheel each write theirs
// (the same bytes: the encoder's output depends on its input alone), and
// the loser's goes with its directory. A complete entry's blob is never
// written again, so readers need no lock; any number may read it at once.
// A resumed entry gets a blob too: a file kept from the killed writer was
// read to be checked, and those bytes are kept like written ones; a blob
// the killed writer left is replaced or removed before the commit.

// SmallBlobName is the blob's file name at an entry's top.
const SmallBlobName = ".volboot-small.pack"

// SmallBlob describes an entry's blob in its manifest.
type SmallBlob struct {
	SHA256 string `json:"sha256"` // of the blob file's bytes
	Size   int64  `json:"size"`   // of the blob file
	Files  int    `json:"files"`  // its records
	Bytes  int64  `json:"bytes"`  // its files' bytes, uncompressed
}

// afterSmallBlob, when set (by tests), is called once a committing
// entry's blob is written, before its manifest.
var afterSmallBlob func(tmp string)

// ErrNoSmallBlob is returned by ReadSmallBlob for an entry whose manifest
// describes no blob.
var ErrNoSmallBlob = errors.New("the store entry has no blob of small files")

// maxSmallBytes bounds the bytes of small files an unpack keeps in memory
// for one entry's blob, from its extract to its commit; an entry over it
// gets no blob. A torch-sized wheel's small files (sources, headers,
// bytecode) are well below it; a whole stack's, the bytes of its pack,
// are a few hundred MB for the F5 stack, of which only the entries
// between extract and commit are held at once.
const maxSmallBytes = 512 << 20

// smallFile reports whether the file at p (relative to the entry), of size
// bytes, goes into the entry's blob: what a pack of any generation may
// take from the entry (locallayout.Packed): a file below
// pack.DefaultThreshold, one pack.AlwaysPacked names, and what lands in a
// generation's scripts directory (bin: .data/scripts, and .data/data/bin,
// since the data category is the environment's root).
func smallFile(dataDir, p string, size int64) bool {
	if size < pack.DefaultThreshold || pack.AlwaysPacked(p) {
		return true
	}
	if dataDir != "" {
		if rest, ok := strings.CutPrefix(p, dataDir+"/"); ok {
			return strings.HasPrefix(rest, "scripts/") || strings.HasPrefix(rest, "data/bin/")
		}
	}
	return false
}

// smallFiles gathers the bytes of an entry's small files as they are
// written or checked. Safe for concurrent use.
type smallFiles struct {
	mu    sync.Mutex
	data  map[string][]byte
	bytes int64
	// dropped: some small file's bytes were not kept (over
	// maxSmallBytes): the entry gets no blob.
	dropped bool
}

func newSmallFiles() *smallFiles { return &smallFiles{data: map[string][]byte{}} }

// add keeps b as the bytes of the entry's file p.
func (s *smallFiles) add(p string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dropped {
		return
	}
	if old, ok := s.data[p]; ok {
		s.bytes -= int64(len(old))
	}
	s.bytes += int64(len(b))
	if s.bytes > maxSmallBytes {
		s.dropped, s.data = true, nil
		return
	}
	s.data[p] = b
}

// writeSmallBlob writes the blob of the entry being committed in p.tmp and
// sets p.entry.Small. Any failure leaves the entry without a blob (and
// without a blob file, where the removal succeeds): it is logged, not
// returned. Files must be final and sorted (after the compile).
func (s *Store) writeSmallBlob(p *pendingEntry, mode SyncMode) {
	e := &p.entry
	e.Small = nil
	dst := filepath.Join(p.tmp, SmallBlobName)
	none := func(why string, fields ...zap.Field) {
		if p.resumed {
			// A blob its killed writer left must not be committed with
			// the entry (undescribed, it would only be dead weight).
			if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.logger().Debug("could not remove a killed writer's blob", zap.String("path", dst), zap.Error(err))
			}
		}
		s.logger().Debug("store entry without a blob of small files: "+why, append(fields, zap.String("wheel", p.src.Filename))...)
	}
	sf := p.small
	p.small = nil // the blob is written once; the bytes go with this call
	if sf == nil || sf.dropped {
		none(fmt.Sprintf("its small files are more than %d MiB", maxSmallBytes>>20))
		return
	}
	var files []File
	for _, f := range e.Files {
		if !smallFile(e.Data, f.Path, f.Size) {
			continue
		}
		b, ok := sf.data[f.Path]
		if !ok || int64(len(b)) != f.Size {
			none("the unpack did not have all its small files in memory", zap.String("file", f.Path))
			return
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		none("it has no small files")
		return
	}
	blob, err := writeBlobFile(dst, files, sf.data, mode)
	if err != nil {
		os.Remove(dst)
		s.logger().Warn("could not write a store entry's blob of small files; packs read them one by one", zap.String("wheel", p.src.Filename), zap.Error(err))
		return
	}
	e.Small = blob
}

// writeBlobFile writes files (sorted by path, their bytes in data) as a
// blob at dst, replacing what a killed writer left there.
func writeBlobFile(dst string, files []File, data map[string][]byte, mode SyncMode) (*SmallBlob, error) {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		if err := os.Remove(dst); err != nil {
			return nil, err
		}
		f, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	}
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	cw := &pack.CountingWriter{W: io.MultiWriter(f, h)}
	blob := &SmallBlob{Files: len(files)}
	err = func() error {
		w, err := pack.NewWriter(cw)
		if err != nil {
			return err
		}
		for _, fl := range files {
			if err := w.File(fl.Path, fl.Exec, 0, data[fl.Path]); err != nil {
				return err
			}
			blob.Bytes += fl.Size
		}
		return w.Close()
	}()
	if err == nil && mode.FsyncFiles() {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	blob.SHA256, blob.Size = hex.EncodeToString(h.Sum(nil)), cw.N
	return blob, nil
}

// ReadSmallBlob reads the blob of the complete entry e and returns its
// files' bytes by their path in the entry, every one checked against e's
// manifest (DecodeSmallBlob). It returns ErrNoSmallBlob when the manifest
// describes none, and an error for a blob that is missing or damaged: the
// caller then reads the entry's files one by one.
func ReadSmallBlob(e *Entry) (map[string][]byte, error) {
	if e.Small == nil {
		return nil, ErrNoSmallBlob
	}
	f, err := os.Open(filepath.Join(e.Dir, SmallBlobName))
	if err != nil {
		return nil, fmt.Errorf("store entry %s: blob of small files: %w", e.Dir, err)
	}
	defer f.Close()
	return DecodeSmallBlob(f, e)
}

// DecodeSmallBlob reads a blob of e's small files from r and returns the
// files' bytes by their path in the entry. It returns them only once the
// whole blob has been read and found to be the one e's manifest describes
// (its sha256, size, record count and bytes) and every record a file the
// manifest lists, of its size and mode and, where the manifest has one,
// of its RECORD hash; any other blob is an error, and nothing of it is
// returned.
func DecodeSmallBlob(r io.Reader, e *Entry) (map[string][]byte, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("store entry %s: blob of small files: "+format, append([]any{e.Dir}, args...)...)
	}
	want := e.Small
	if want == nil {
		return nil, ErrNoSmallBlob
	}
	if want.Files < 0 || want.Bytes < 0 || want.Size < 0 || len(want.SHA256) != 64 {
		return nil, bad("the manifest describes it wrongly")
	}
	files := make(map[string]*File, len(e.Files))
	for i := range e.Files {
		files[e.Files[i].Path] = &e.Files[i]
	}
	cr := &countingReader{r: io.LimitReader(r, want.Size+1)}
	pr, err := pack.NewReader(cr, SmallBlobName, want.SHA256)
	if err != nil {
		return nil, bad("%w", err)
	}
	defer pr.Close()
	out := make(map[string][]byte, min(want.Files, len(e.Files)))
	var total int64
	for {
		rec, err := pr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, bad("%w", err)
		}
		f := files[rec.Path]
		switch {
		case rec.Kind != pack.File && rec.Kind != pack.Exec:
			return nil, bad("%s: a record of kind %q", rec.Path, rec.Kind)
		case f == nil:
			return nil, bad("%s is not a file of the entry", rec.Path)
		case rec.Size != f.Size:
			return nil, bad("%s: %d bytes, the manifest says %d", rec.Path, rec.Size, f.Size)
		case (rec.Kind == pack.Exec) != f.Exec:
			return nil, bad("%s: executable %v, the manifest says %v", rec.Path, rec.Kind == pack.Exec, f.Exec)
		case len(out) >= want.Files || total+rec.Size > want.Bytes:
			return nil, bad("more files or bytes than the manifest says (%d, %d)", want.Files, want.Bytes)
		}
		total += rec.Size
		b := make([]byte, rec.Size)
		if _, err := io.ReadFull(pr, b); err != nil {
			return nil, bad("%s: %w", rec.Path, err)
		}
		if f.Hash != "" {
			if err := checkDigest(f.Hash, b); err != nil {
				return nil, bad("%s: %w", rec.Path, err)
			}
		}
		out[rec.Path] = b
	}
	if len(out) != want.Files || total != want.Bytes || cr.n != want.Size {
		return nil, bad("%d files, %d bytes, %d bytes of blob; the manifest says %d, %d, %d", len(out), total, cr.n, want.Files, want.Bytes, want.Size)
	}
	return out, nil
}

// checkDigest checks data against a manifest's "alg=digest" hash.
func checkDigest(hash string, data []byte) error {
	alg, _, _ := strings.Cut(hash, "=")
	h, err := newHash(alg)
	if err != nil {
		return err
	}
	h.Write(data)
	if got := EncodeDigest(alg, h.Sum(nil)); got != hash {
		return fmt.Errorf("%s does not match the manifest's %s", got, hash)
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// keepBuffer returns a buffer for a member's bytes when they are to be
// kept (for the compiler or the blob), else nil.
func keepBuffer(m zipMember) *bytes.Buffer {
	if !m.source && !m.small {
		return nil
	}
	return bytes.NewBuffer(make([]byte, 0, m.f.UncompressedSize64))
}
