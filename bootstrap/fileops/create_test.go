package fileops

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCreateFile: the bytes, the mode (exec bits kept), the mtime when
// asked, and an existing path refused (fs.ErrExist) and left alone.
func TestCreateFile(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("volboot "), 10000)
	mtime := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	p := filepath.Join(dir, "a")
	if err := CreateFile(p, data, 0o755, CreateOptions{MTime: mtime, Fsync: true}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, len(data))
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 || !fi.ModTime().Equal(mtime) {
		t.Errorf("mode %v mtime %v, want 0755 and %v", fi.Mode().Perm(), fi.ModTime(), mtime)
	}
	empty := filepath.Join(dir, "empty")
	if err := CreateFile(empty, nil, 0o644, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(empty); err != nil || fi.Size() != 0 || fi.ModTime().Equal(mtime) {
		t.Errorf("empty file: %v %v", fi, err)
	}
	err = CreateFile(p, []byte("other"), 0o644, CreateOptions{})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("creating over an existing file: %v, want fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, data) {
		t.Fatal("the refused create changed the existing file")
	}
	if err := CreateFile(filepath.Join(dir, "no", "such", "dir"), data, 0o644, CreateOptions{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("create in a missing directory: %v", err)
	}
}
