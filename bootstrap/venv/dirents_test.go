package venv

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReadDirInodes: the inode numbers read from the directory are the
// files' own, links share one, and directories are left out.
func TestReadDirInodes(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "a2")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	got := readDirInodes(dir)
	if len(got) != 3 {
		t.Fatalf("got %v, want the three files", got)
	}
	for _, n := range []string{"a", "a2", "b"} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if ino := fi.Sys().(*syscall.Stat_t).Ino; got[n] != ino {
			t.Errorf("%s: inode %d from the directory, %d from stat", n, got[n], ino)
		}
	}
	if got := readDirInodes(filepath.Join(dir, "missing")); got != nil {
		t.Errorf("a missing directory gave %v", got)
	}
}

// FuzzParseDirents: any bytes are parsed without a panic, and only into
// names that fit the record they came from.
func FuzzParseDirents(f *testing.F) {
	rec := func(ino uint64, typ byte, name string) []byte {
		n := 19 + len(name) + 1
		n = (n + 7) &^ 7
		b := make([]byte, n)
		b[0] = byte(ino)
		b[16] = byte(n)
		b[18] = typ
		copy(b[19:], name)
		return b
	}
	f.Add(append(rec(5, 8, "file.py"), rec(6, 4, "dir")...))
	f.Add([]byte{})
	f.Add(make([]byte, 19))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := dirInodes{}
		parseDirents(b, out)
		for name := range out {
			if len(name) > len(b) {
				t.Fatalf("name %q longer than the input", name)
			}
		}
	})
}
