package wheel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fileops"
)

// Resuming a partial entry (DESIGN.md §5.4).
//
// A wheel is unpacked into a staging directory named
// atomicfile.TempName(<sha>.partial): the ".partial" final name sets it apart
// from every other temporary name in the store (an entry set aside for
// removal has the final name <sha>). Nothing is ever removed from inside a
// staging directory: its writer only adds files, and on failure moves the
// whole directory to the trash. So a staging directory left by a killed
// writer holds a subset of the entry's files, each either complete or cut
// short by the kill (a torn write).
//
// A later writer of the same wheel may take such a directory over (when
// Store.Adopt allows: the reconciler allows it under the volume lock, whose
// previous holders are gone or fenced) by renaming it to its own staging
// name. One rename: of several takers exactly one wins. Then it reads each
// of the entry's directories once to learn what is there (presentFiles),
// and writes every file of the wheel as usual, except that a file already
// present is kept only if it is provably the file the wheel holds (such a
// check only reads, so many run at once, and a kept source's bytes, read
// for the check, go to the compiler):
//
//   - a wheel file: a regular file of RECORD's size whose content hashes to
//     RECORD's digest. Size alone would do for a write cut short, but on a
//     network filesystem a client that dies with cached writes can leave a
//     file of full length with holes, so every kept byte is hashed: a read,
//     which costs less than the create and write it saves;
//   - bytecode: byte for byte the bytecode just compiled;
//   - RECORD (no digest of its own) and anything else: never kept.
//
// A file that fails is removed and written again. A writer that is not dead
// but fenced (a partition that healed) can still be writing into the
// directory taken from it. Through paths it can no longer create anything
// (its directory's name is gone); through directory handles it already
// holds it can still create, but only names of the same wheel: each is
// either made already (its create fails) or checked like any other when
// this writer reaches it. A file it was still writing fails the check and
// is replaced; its later writes go to the removed inode.

// PartialSuffix ends the final name of a store entry's staging directory,
// and of a generation's (see venv.Builder).
const PartialSuffix = ".partial"

// stagingDir is a new staging name for the entry at final.
func stagingDir(final string) string { return atomicfile.TempName(final + PartialSuffix) }

// takePartial renames a partial entry of sha that another writer left (if
// Adopt allows one) to tmp, and reports whether it did.
func (s *Store) takePartial(sha, tmp string) bool {
	if s.Adopt == nil {
		return false
	}
	s.partialsOnce.Do(s.findPartials)
	s.partialsMu.Lock()
	cands := s.partials[sha]
	delete(s.partials, sha)
	s.partialsMu.Unlock()
	for _, p := range cands {
		if err := os.Rename(p, tmp); err == nil {
			Adopted(tmp, s.logger())
			return true
		}
	}
	return false
}

// Adopted readies a staging directory just taken over (renamed to dir):
// its mtime is set to now, because with no lock a writer on another host
// is judged dead by the mtime of its directory and the rename kept the old
// one; and the temporary files its killed writer left at the top (a
// manifest or marker cut short by the kill, made by atomicfile) are
// removed, or the finished entry would carry them forever.
func Adopted(dir string, log *zap.Logger) {
	now := time.Now()
	if err := os.Chtimes(dir, now, now); err != nil {
		log.Debug("could not touch an adopted staging directory", zap.String("dir", dir), zap.Error(err))
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if _, tmp := atomicfile.ParseTempName(e.Name()); tmp && !e.IsDir() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// HasPartial reports whether a partial entry of sha that Adopt allows is
// waiting to be resumed.
func (s *Store) HasPartial(sha string) bool {
	if s.Adopt == nil {
		return false
	}
	s.partialsOnce.Do(s.findPartials)
	s.partialsMu.Lock()
	defer s.partialsMu.Unlock()
	return len(s.partials[sha]) > 0
}

// findPartials lists the store's staging directories that Adopt allows,
// by wheel: one directory read for the whole sync.
func (s *Store) findPartials() {
	s.partials = map[string][]string{}
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		ti, ok := atomicfile.ParseTempName(e.Name())
		if !ok || !e.IsDir() || !strings.HasSuffix(ti.Final, PartialSuffix) {
			continue
		}
		sha := strings.TrimSuffix(ti.Final, PartialSuffix)
		if isHexDigest(sha) && s.Adopt(ti, e) {
			s.partials[sha] = append(s.partials[sha], filepath.Join(s.Dir, e.Name()))
		}
	}
}

// Resumed says how many entries this Store took over from dead writers and
// how many of their files it kept.
func (s *Store) Resumed() (entries, files int) {
	return int(s.resumedEntries.Load()), int(s.keptFiles.Load())
}

// keepWritten checks a wheel file already at dst in a resumed entry (see
// the comment at the top of this file): it returns the File to record and
// true when the file is the one m describes, and for a source or small
// member (m.source, m.small) its bytes as read for the check, which the
// compiler and the entry's blob take instead of reading the file back.
func keepWritten(dst string, m zipMember, fsync bool) (File, []byte, bool) {
	if m.rec.Algorithm == "" {
		return File{}, nil, false
	}
	h, err := newHash(m.rec.Algorithm)
	if err != nil {
		return File{}, nil, false
	}
	var keep io.Writer // not src itself: a nil *bytes.Buffer is not a nil io.Writer
	src := keepBuffer(m)
	if src != nil {
		keep = src
	}
	f, st, ok := openHashed(dst, int64(m.f.UncompressedSize64), h, m.rec.Digest, keep)
	if !ok {
		return File{}, nil, false
	}
	defer f.Close()
	if m.exec && st.Mode().Perm() != 0o755 {
		// Killed between close and chmod.
		if err := os.Chmod(dst, 0o755); err != nil {
			return File{}, nil, false
		}
	}
	if fsync && f.Sync() != nil {
		// Its writer may have died before its fsync.
		return File{}, nil, false
	}
	fl := File{Path: m.name, Size: st.Size(), Exec: m.exec, Hash: EncodeDigest(m.rec.Algorithm, m.rec.Digest)}
	if src != nil {
		return fl, src.Bytes(), true
	}
	return fl, nil, true
}

// openHashed opens the file at path, not following a symlink, and returns
// it open when it is a regular file of size bytes whose content hashes
// with h to digest: a file a killed writer left whole. The bytes read go
// to keep as well when it is not nil. The caller closes the file.
func openHashed(path string, size int64, h hash.Hash, digest []byte, keep io.Writer) (*os.File, fs.FileInfo, bool) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, false
	}
	st, err := f.Stat()
	if err == nil && st.Mode().IsRegular() && st.Size() == size {
		var w io.Writer = h
		if keep != nil {
			w = io.MultiWriter(h, keep)
		}
		bp := copyBufs.Get().(*[]byte)
		_, err = io.CopyBuffer(w, f, *bp)
		copyBufs.Put(bp)
		if err == nil && bytes.Equal(h.Sum(nil), digest) {
			return f, st, true
		}
	}
	f.Close()
	return nil, nil, false
}

// presentFiles lists the regular files in a staging directory just taken
// over (tmp), by '/'-separated path relative to it: one read of each of
// the entry's directories (dirs, relative, and its top) and of the
// __pycache__ directories they hold, many in flight. So a resumed unpack
// knows which files to check without trying to create each first (on a
// network volume the failed create is a round trip, held to its
// directory's lock), and checks them many at once: a check only reads.
// A directory that cannot be read lists nothing; a file there after all is
// still found when its create fails.
func presentFiles(ctx context.Context, tmp string, dirs map[string]bool, ops *fileops.Scheduler) map[string]bool {
	var mu sync.Mutex
	out := map[string]bool{}
	list := func(rel string) (sub []string) {
		ents, err := os.ReadDir(filepath.Join(tmp, filepath.FromSlash(rel)))
		if err != nil {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range ents {
			p := path.Join(rel, e.Name())
			switch {
			case e.Type().IsRegular():
				out[p] = true
			case e.IsDir() && e.Name() == "__pycache__":
				sub = append(sub, p)
			}
		}
		return sub
	}
	g := ops.Group(ctx)
	for d := range dirs {
		g.Go(d, func() error {
			for _, sub := range list(d) {
				list(sub)
			}
			return nil
		})
	}
	if !dirs["."] {
		g.Go(".", func() error {
			for _, sub := range list(".") {
				list(sub)
			}
			return nil
		})
	}
	g.Wait()
	return out
}

// WriteOrKeep is WriteNew for a directory being resumed: a file already at
// path that holds exactly data with mode perm is kept (kept is true);
// anything else there is removed and path written anew. present says path
// is known to exist (from a directory listing): it is then read first,
// without a create that would fail.
func WriteOrKeep(path string, data []byte, perm os.FileMode, fsync, present bool) (kept bool, err error) {
	if !present {
		err = WriteNew(path, data, perm, fsync)
		if !errors.Is(err, fs.ErrExist) {
			return false, err
		}
	}
	if sameBytes(path, data, perm) {
		if fsync {
			// Its writer may have died before its fsync.
			if err := SyncFile(path); err != nil {
				return false, err
			}
		}
		return true, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("replace %s: %w", path, err)
	}
	return false, WriteNew(path, data, perm, fsync)
}

// sameBytes reports whether path is a regular file with mode perm holding
// exactly data.
func sameBytes(path string, data []byte, perm os.FileMode) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() != int64(len(data)) || st.Mode().Perm() != perm {
		return false
	}
	got := make([]byte, len(data)+1)
	n, err := io.ReadFull(f, got)
	return n == len(data) && errors.Is(err, io.ErrUnexpectedEOF) && bytes.Equal(got[:n], data) ||
		len(data) == 0 && errors.Is(err, io.EOF)
}

// SyncFile fsyncs the file at path.
func SyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// logResumed notes an entry taken over.
func (s *Store) logResumed(src Source, kept, total int) {
	s.logger().Info("resumed a store entry a previous worker left partly unpacked",
		zap.String("wheel", src.Filename), zap.Int("kept", kept), zap.Int("files", total))
}
