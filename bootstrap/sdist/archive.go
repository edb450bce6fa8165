package sdist

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Limits bound what an sdist may unpack to. An sdist is a downloaded
// archive verified only by its hash, so a lock pointing at a hostile one
// must not fill the disk or escape the build directory.
type Limits struct {
	MaxBytes int64 // total uncompressed size; default 2 GiB
	MaxFiles int   // entries; default 100,000
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 2 << 30
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = 100_000
	}
	return l
}

// ErrArchive is wrapped by every error about the archive's content.
var ErrArchive = errors.New("not a usable sdist")

// Extract unpacks the sdist at file (a .tar.gz, .tar.bz2 or .zip, told
// apart by their first bytes) into dest, which must exist and be empty,
// and returns the project directory: the archive's one top-level
// directory. Refused, before anything is written outside dest: absolute
// paths, "..", backslashes, control characters, empty components; links,
// devices and other entries that are neither files nor directories;
// duplicates; more than lim allows; and content that is not under one top
// directory.
func Extract(file, dest string, lim Limits) (string, error) {
	lim = lim.withDefaults()
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, _ := br.Peek(4)
	x := &extractor{dest: dest, lim: lim, seen: map[string]bool{}}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		gz, err := gzip.NewReader(br)
		if err != nil {
			return "", fmt.Errorf("%w: gzip: %v", ErrArchive, err)
		}
		err = x.tar(gz)
		if err != nil {
			return "", err
		}
	case bytes.HasPrefix(magic, []byte("BZh")):
		if err := x.tar(bzip2.NewReader(br)); err != nil {
			return "", err
		}
	case bytes.HasPrefix(magic, []byte("PK\x03\x04")), bytes.HasPrefix(magic, []byte("PK\x05\x06")):
		fi, err := f.Stat()
		if err != nil {
			return "", err
		}
		zr, err := zip.NewReader(f, fi.Size())
		if err != nil {
			return "", fmt.Errorf("%w: zip: %v", ErrArchive, err)
		}
		if err := x.zip(zr); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("%w: neither a gzip or bzip2 tar archive nor a zip", ErrArchive)
	}
	if x.top == "" {
		return "", fmt.Errorf("%w: the archive is empty", ErrArchive)
	}
	if !x.topIsDir {
		return "", fmt.Errorf("%w: %s is a file at the top of the archive; an sdist holds one directory, <name>-<version>/", ErrArchive, x.top)
	}
	return filepath.Join(dest, x.top), nil
}

type extractor struct {
	dest     string
	lim      Limits
	seen     map[string]bool
	files    int
	bytes    int64
	top      string
	topIsDir bool
}

// cleanName checks an archive member's name and returns it without a
// leading "./" or trailing "/"; "" means the entry is the archive root
// itself ("./"), which is skipped.
func cleanName(name string) (string, error) {
	n := strings.TrimPrefix(name, "./")
	n = strings.TrimSuffix(n, "/")
	if n == "" || n == "." {
		return "", nil
	}
	bad := func(why string) error { return fmt.Errorf("%w: member %q: %s", ErrArchive, name, why) }
	if strings.HasPrefix(n, "/") {
		return "", bad("absolute path")
	}
	if strings.Contains(n, "\\") {
		return "", bad("backslash in path")
	}
	for _, r := range n {
		if r < 0x20 || r == 0x7f {
			return "", bad("control character in path")
		}
	}
	for _, part := range strings.Split(n, "/") {
		switch part {
		case "", ".":
			return "", bad("empty or '.' path component")
		case "..":
			return "", bad("'..' in path")
		}
	}
	return n, nil
}

// enter accounts for a member and checks it stays under the one top
// directory; it returns the member's path on disk.
func (x *extractor) enter(name string, isDir bool, size int64) (string, error) {
	x.files++
	if x.files > x.lim.MaxFiles {
		return "", fmt.Errorf("%w: more than %d members", ErrArchive, x.lim.MaxFiles)
	}
	if size < 0 {
		return "", fmt.Errorf("%w: member %q has a negative size", ErrArchive, name)
	}
	x.bytes += size
	if x.bytes > x.lim.MaxBytes {
		return "", fmt.Errorf("%w: more than %d bytes uncompressed", ErrArchive, x.lim.MaxBytes)
	}
	if x.seen[name] {
		if isDir && x.seenDir(name) {
			return "", nil // a directory listed twice is harmless
		}
		return "", fmt.Errorf("%w: member %q appears twice", ErrArchive, name)
	}
	top, _, nested := strings.Cut(name, "/")
	switch {
	case x.top == "":
		x.top, x.topIsDir = top, nested || isDir
	case top != x.top:
		return "", fmt.Errorf("%w: members under both %s/ and %s: an sdist holds one top directory", ErrArchive, x.top, top)
	case !x.topIsDir:
		return "", fmt.Errorf("%w: %s is both a file and a directory", ErrArchive, top)
	}
	// A name seen as a file may not become a directory, nor the reverse.
	for p := path.Dir(name); p != "."; p = path.Dir(p) {
		if x.seen[p] && !x.seenDir(p) {
			return "", fmt.Errorf("%w: %s is both a file and a directory", ErrArchive, p)
		}
		x.seen[p], x.seen[p+"/"] = true, true
	}
	x.seen[name] = true
	if isDir {
		x.seen[name+"/"] = true
	}
	return filepath.Join(x.dest, filepath.FromSlash(name)), nil
}

func (x *extractor) seenDir(p string) bool { return x.seen[p+"/"] }

func (x *extractor) tar(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: tar: %v", ErrArchive, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader || h.Typeflag == tar.TypeXHeader {
			continue
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			p, err := x.enter(name, true, 0)
			if err != nil {
				return err
			}
			if p != "" {
				if err := mkdirAll(x.dest, p); err != nil {
					return err
				}
			}
		case tar.TypeReg:
			p, err := x.enter(name, false, h.Size)
			if err != nil {
				return err
			}
			if err := x.write(p, tr, h.Size, fs.FileMode(h.Mode)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: member %q is not a regular file or directory (tar type %q): volboot does not unpack links or devices from an sdist", ErrArchive, h.Name, h.Typeflag)
		}
	}
}

func (x *extractor) zip(zr *zip.Reader) error {
	for _, zf := range zr.File {
		name, err := cleanName(zf.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue
		}
		mode := zf.Mode()
		switch {
		case mode.IsDir() || strings.HasSuffix(zf.Name, "/"):
			p, err := x.enter(name, true, 0)
			if err != nil {
				return err
			}
			if p != "" {
				if err := mkdirAll(x.dest, p); err != nil {
					return err
				}
			}
		case mode.IsRegular():
			if zf.UncompressedSize64 > uint64(x.lim.MaxBytes) {
				return fmt.Errorf("%w: member %q is larger than %d bytes", ErrArchive, zf.Name, x.lim.MaxBytes)
			}
			size := int64(zf.UncompressedSize64)
			p, err := x.enter(name, false, size)
			if err != nil {
				return err
			}
			rc, err := zf.Open()
			if err != nil {
				return fmt.Errorf("%w: member %q: %v", ErrArchive, zf.Name, err)
			}
			err = x.write(p, rc, size, mode)
			rc.Close()
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: member %q is not a regular file or directory (%v): volboot does not unpack links or devices from an sdist", ErrArchive, zf.Name, mode.Type())
		}
	}
	return nil
}

// write copies exactly size bytes of r to a new file at p (executable when
// mode says so for its owner).
func (x *extractor) write(p string, r io.Reader, size int64, mode fs.FileMode) error {
	if err := mkdirAll(x.dest, filepath.Dir(p)); err != nil {
		return err
	}
	perm := fs.FileMode(0o644)
	if mode&0o100 != 0 {
		perm = 0o755
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: member %s: %v", ErrArchive, p, err)
	}
	if n != size {
		return fmt.Errorf("%w: member %s holds %d bytes, its header says %d", ErrArchive, p, n, size)
	}
	return nil
}

// mkdirAll makes dir and its parents below root. Members are checked
// before they get here, so every path is under root already.
func mkdirAll(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("%w: %s is outside %s", ErrArchive, dir, root)
	}
	return os.MkdirAll(dir, 0o755)
}
