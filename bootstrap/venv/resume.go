package venv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/wheel"
)

// Completing a partial generation (DESIGN.md §6.2).
//
// A generation is built in a staging directory named
// atomicfile.TempName(<id>.partial) and renamed into place once complete.
// Its content is a function of its id (the id hashes every input), and
// nothing is ever removed from inside a staging directory: on failure the
// whole directory goes to the trash. So the staging directory of a builder
// killed halfway holds a subset of the generation's paths, each either
// right or cut short by the kill. A later build of the same id takes it
// over with one rename (of several takers one wins; Builder.Adopt decides
// which are eligible) and makes every path as usual, except that one
// already there is kept when it is provably right:
//
//   - a hard link to a store file: the same inode as the source. A link
//     exists whole or not at all;
//   - a written file (a launcher, RECORD, INSTALLER, ...): byte for byte
//     the content and mode the build would write;
//   - a copy (where the filesystem refused a link): same content, mode and
//     mtime as the source (the mtime is set last, so a copy cut short
//     before it is made again).
//
// Anything else is removed and made again. The skeleton (pyvenv.cfg, the
// interpreter links, activate scripts) is simply written again.

// takePartial renames a partial build of the generation at dir that Adopt
// allows to tmp, and reports whether it did.
func (b *Builder) takePartial(dir, tmp string) bool {
	if b.Adopt == nil {
		return false
	}
	parent, want := filepath.Split(dir)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return false
	}
	for _, e := range ents {
		ti, ok := atomicfile.ParseTempName(e.Name())
		if !ok || !e.IsDir() || ti.Final != want+wheel.PartialSuffix || !b.Adopt(ti, e) {
			continue
		}
		if os.Rename(filepath.Join(parent, e.Name()), tmp) == nil {
			return true
		}
	}
	return false
}

// sameInode reports whether name in directory dfd is the file base in
// directory sfd.
func sameInode(sfd int, base string, dfd int, name string) bool {
	var a, b unix.Stat_t
	if unix.Fstatat(sfd, base, &a, unix.AT_SYMLINK_NOFOLLOW) != nil || unix.Fstatat(dfd, name, &b, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// copyOrKeep copies src to dst; in a resumed build a copy already at dst
// is kept when complete (kept is true) and made again otherwise.
func copyOrKeep(src, dst string, fsync, resumed bool) (kept bool, err error) {
	err = copyFile(src, dst, fsync)
	if !resumed || !errors.Is(err, fs.ErrExist) {
		return false, err
	}
	if sameCopy(src, dst) {
		return true, nil
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("replace %s: %w", dst, err)
	}
	return false, copyFile(src, dst, fsync)
}

// sameCopy reports whether dst is a finished copy of src (see copyFile):
// same size, mode, mtime and bytes.
func sameCopy(src, dst string) bool {
	a, err := os.Open(src)
	if err != nil {
		return false
	}
	defer a.Close()
	b, err := os.Open(dst)
	if err != nil {
		return false
	}
	defer b.Close()
	sa, err1 := a.Stat()
	sb, err2 := b.Stat()
	if err1 != nil || err2 != nil || !sb.Mode().IsRegular() || sa.Size() != sb.Size() ||
		sa.Mode().Perm() != sb.Mode().Perm() || !sa.ModTime().Equal(sb.ModTime()) {
		return false
	}
	ba, bb := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if ea != nil || eb != nil {
			return (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF)
		}
	}
}
