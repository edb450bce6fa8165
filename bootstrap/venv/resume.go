package venv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/wheel"
)

// Completing a partial generation (DESIGN.md §5.4).
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
//   - a copy (where the filesystem refused a link, and every dist-info
//     file): same size, mode and mtime as the source. copyFile sets the
//     mtime last, after close returned (on MooseFS, once the client has
//     flushed the data), so a copy cut short anywhere before has another
//     mtime and is made again; comparing bytes too would cost a read of
//     both files per copy on a network volume, for nothing.
//
// Anything else is removed and made again. The skeleton (pyvenv.cfg, the
// interpreter links, activate scripts) is simply written again.
//
// Checking links one by one costs round trips per file on a network
// volume (MooseFS: a resumed 2,180-file generation took 4.5 s to check,
// most of a kill interval, so under a kill loop no try got further). So
// each directory of the partial build and each store directory it links
// from is read once, inode numbers included (getdents' d_ino; on MooseFS,
// as on local filesystems, the file's st_ino): a name whose inode is its
// source's is the link, with no further call. Only names that are there
// and differ, or that cannot be judged so, are looked at one by one.

// Under --durability files every file of a generation is fsynced as it is
// made, so once the last batch is done the tree is whole and durable but
// for its directories. The builder then writes filledName (atomically,
// with the count of copies the marker needs) before it syncs the
// directories; a builder that takes the staging directory over and finds
// it skips the fill entirely: on MooseFS, checking a whole 3,500-file tree
// directory by directory took 4 s, most of a kill interval, each time a
// builder was killed during the sync. The record is removed before the
// marker is written, so no finished generation holds it. Under the other
// modes data is durable only after the sync, and the tree is checked.

// filledName records, in a staging directory, that every file was made.
const filledName = ".volboot-filled"

// recordFilled writes filledName in the staging directory tmp. Failing to
// write it costs only a check later.
func recordFilled(tmp string, copied int, log *zap.Logger) {
	if err := atomicfile.Write(filepath.Join(tmp, filledName), []byte(strconv.Itoa(copied)+"\n"), 0o644); err != nil {
		log.Debug("could not record a filled generation", zap.String("dir", tmp), zap.Error(err))
	}
}

// readFilled reads filledName in the staging directory tmp: the count of
// copies, and whether the record is there and whole.
func readFilled(tmp string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(tmp, filledName))
	if err != nil {
		return 0, false
	}
	s, ok := strings.CutSuffix(string(b), "\n")
	n, err := strconv.Atoi(s)
	return n, ok && err == nil && n >= 0
}

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
			wheel.Adopted(tmp, b.logger())
			return true
		}
	}
	return false
}

// dirInodes maps the names of one directory's regular files to their
// inode numbers; 0 when the number is not to be trusted (a name is then
// known to be there, nothing more).
type dirInodes map[string]uint64

// inodeTrust decides, once per build, whether the inode numbers a
// directory read gives are the files' own. They are on MooseFS and on
// local filesystems; a FUSE server that does not pass them through gives
// every entry one made-up number, and a torn copy would then pass for a
// link. So the first directory read with a file in it is checked against
// fstatat of one of its files, and numbers are used only if they agree.
type inodeTrust struct {
	mu               sync.Mutex
	decided, trusted bool
}

// read is readDirInodes with the numbers cleared unless trusted.
func (t *inodeTrust) read(dir string) dirInodes {
	m := readDirInodes(dir)
	if len(m) == 0 {
		return m
	}
	t.mu.Lock()
	if !t.decided {
		for name, ino := range m {
			var st unix.Stat_t
			if unix.Fstatat(unix.AT_FDCWD, filepath.Join(dir, name), &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
				t.decided, t.trusted = true, st.Ino == ino && ino != 0 && ino != 0xffffffff
			}
			break
		}
	}
	trusted := t.decided && t.trusted
	t.mu.Unlock()
	if !trusted {
		for name := range m {
			m[name] = 0
		}
	}
	return m
}

// readDirInodes reads directory dir's names and inode numbers (regular
// files only); nil when it cannot be read, so that every lookup misses.
func readDirInodes(dir string) dirInodes {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	out := dirInodes{}
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil
		}
		if n <= 0 {
			return out
		}
		parseDirents(buf[:n], out)
	}
}

// parseDirents adds the regular files of a buffer of linux_dirent64
// records (ino u64, off s64, reclen u16, type u8, name NUL-terminated) to
// out.
func parseDirents(b []byte, out dirInodes) {
	for len(b) >= 19 {
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			return
		}
		if b[18] == unix.DT_REG {
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			out[string(name)] = binary.NativeEndian.Uint64(b[0:8])
		}
		b = b[reclen:]
	}
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
// is kept when complete (kept is true) and made again otherwise. present
// says dst is known to exist: it is judged before any copy is tried.
func copyOrKeep(src, dst string, fsync, resumed, present bool) (kept bool, err error) {
	if !present {
		err = copyFile(src, dst, fsync)
		if !resumed || !errors.Is(err, fs.ErrExist) {
			return false, err
		}
	}
	if sameCopy(src, dst) {
		if fsync {
			// Its writer may have died before its fsync.
			if err := wheel.SyncFile(dst); err != nil {
				return false, err
			}
		}
		return true, nil
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("replace %s: %w", dst, err)
	}
	return false, copyFile(src, dst, fsync)
}

// sameCopy reports whether dst is a finished copy of src (see copyFile
// and the comment at the top of this file): same size, mode and mtime.
func sameCopy(src, dst string) bool {
	sa, err1 := os.Stat(src)
	sb, err2 := os.Lstat(dst)
	return err1 == nil && err2 == nil && sb.Mode().IsRegular() && sa.Size() == sb.Size() &&
		sa.Mode().Perm() == sb.Mode().Perm() && sa.ModTime().Equal(sb.ModTime())
}
