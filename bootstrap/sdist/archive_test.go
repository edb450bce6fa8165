package sdist

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/sdist/sdisttest"
)

type member struct {
	name string
	typ  byte // tar type; 0 = regular
	data string
	link string
	mode int64
}

func tarGz(t testing.TB, members []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, m := range members {
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := m.mode
		if mode == 0 {
			mode = 0o644
		}
		h := &tar.Header{Name: m.name, Typeflag: typ, Mode: mode, Linkname: m.link}
		if typ == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: typ, PAXRecords: map[string]string{"comment": m.name}}
		}
		if typ == tar.TypeReg {
			h.Size = int64(len(m.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(m.data))
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func extractBytes(t testing.TB, data []byte, lim Limits) (string, string, error) {
	t.Helper()
	base := t.TempDir()
	file := filepath.Join(base, "sdist")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(base, "dest")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := Extract(file, dest, lim)
	return base, root, err
}

func TestExtract(t *testing.T) {
	for _, zipped := range []bool{false, true} {
		var buf bytes.Buffer
		spec := sdisttest.Spec{Name: "Good.Pkg", Version: "1.0", Zip: zipped, Files: []sdisttest.File{{Name: "bin/tool", Data: "#!/bin/sh\n", Mode: 0o755}}}
		if err := sdisttest.WriteTo(&buf, spec); err != nil {
			t.Fatal(err)
		}
		_, root, err := extractBytes(t, buf.Bytes(), Limits{})
		if err != nil {
			t.Fatalf("zip %v: %v", zipped, err)
		}
		if filepath.Base(root) != "good_pkg-1.0" {
			t.Errorf("project directory %s", root)
		}
		if data, err := os.ReadFile(filepath.Join(root, "good_pkg", "__init__.py")); err != nil || !strings.Contains(string(data), "1.0") {
			t.Errorf("module: %v %q", err, data)
		}
		if fi, err := os.Stat(filepath.Join(root, "bin", "tool")); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("executable: %v %v", err, fi)
		}
		if fi, err := os.Stat(filepath.Join(root, "setup.py")); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("setup.py: %v %v", err, fi)
		}
	}
	// "./" prefixes, a directory listed twice and a global header are fine.
	data := tarGz(t, []member{{name: "./", typ: tar.TypeDir}, {name: "./p-1/", typ: tar.TypeDir}, {name: "./p-1/", typ: tar.TypeDir},
		{name: "pax", typ: tar.TypeXGlobalHeader}, {name: "./p-1/setup.py", data: "x"}})
	if _, root, err := extractBytes(t, data, Limits{}); err != nil || filepath.Base(root) != "p-1" {
		t.Errorf("./ prefixes: %v %s", err, root)
	}
}

func TestExtractRefuses(t *testing.T) {
	for _, c := range []struct {
		name    string
		members []member
		lim     Limits
		want    string
	}{
		{"dotdot", []member{{name: "p-1/../../evil", data: "x"}}, Limits{}, "'..' in path"},
		{"absolute", []member{{name: "/etc/evil", data: "x"}}, Limits{}, "absolute path"},
		{"backslash", []member{{name: "p-1\\..\\evil", data: "x"}}, Limits{}, "backslash"},
		{"control", []member{{name: "p-1/a\nb", data: "x"}}, Limits{}, "control character"},
		{"empty component", []member{{name: "p-1//a", data: "x"}}, Limits{}, "empty or '.'"},
		{"symlink", []member{{name: "p-1/link", typ: tar.TypeSymlink, link: "/etc/passwd"}}, Limits{}, "not a regular file or directory"},
		{"hardlink", []member{{name: "p-1/a", data: "x"}, {name: "p-1/b", typ: tar.TypeLink, link: "p-1/a"}}, Limits{}, "not a regular file or directory"},
		{"device", []member{{name: "p-1/dev", typ: tar.TypeChar}}, Limits{}, "not a regular file or directory"},
		{"two tops", []member{{name: "p-1/setup.py", data: "x"}, {name: "q-1/setup.py", data: "x"}}, Limits{}, "one top directory"},
		{"file at top", []member{{name: "setup.py", data: "x"}}, Limits{}, "file at the top"},
		{"duplicate", []member{{name: "p-1/a", data: "x"}, {name: "p-1/a", data: "y"}}, Limits{}, "appears twice"},
		{"file then dir", []member{{name: "p-1/a", data: "x"}, {name: "p-1/a/b", data: "y"}}, Limits{}, "both a file and a directory"},
		{"dir then file", []member{{name: "p-1/a/b", data: "x"}, {name: "p-1/a", data: "y"}}, Limits{}, "appears twice"},
		{"too many", []member{{name: "p-1/a", data: "x"}, {name: "p-1/b", data: "x"}, {name: "p-1/c", data: "x"}}, Limits{MaxFiles: 2}, "more than 2 members"},
		{"too big", []member{{name: "p-1/a", data: strings.Repeat("x", 100)}}, Limits{MaxBytes: 50}, "more than 50 bytes"},
		{"empty", nil, Limits{}, "empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			base, _, err := extractBytes(t, tarGz(t, c.members), c.lim)
			if err == nil || !errors.Is(err, ErrArchive) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want %q, got %v", c.want, err)
			}
			assertContained(t, base)
		})
	}
	// A zip with a symlink, and something that is no archive at all.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	h := &zip.FileHeader{Name: "p-1/link"}
	h.SetMode(fs.ModeSymlink | 0o777)
	w, _ := zw.CreateHeader(h)
	w.Write([]byte("/etc/passwd"))
	zw.Close()
	if _, _, err := extractBytes(t, buf.Bytes(), Limits{}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("zip symlink: %v", err)
	}
	if _, _, err := extractBytes(t, []byte("not an archive"), Limits{}); err == nil || !errors.Is(err, ErrArchive) {
		t.Errorf("garbage: %v", err)
	}
}

// assertContained fails if anything but the sdist and dest/ is in base:
// nothing may be written outside dest.
func assertContained(t testing.TB, base string) {
	t.Helper()
	ents, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "sdist" && e.Name() != "dest" {
			t.Fatalf("extraction wrote %s outside its destination", e.Name())
		}
	}
	filepath.WalkDir(filepath.Join(base, "dest"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !d.Type().IsRegular() {
			t.Fatalf("extraction made %s, not a regular file", p)
		}
		return nil
	})
}

func FuzzExtract(f *testing.F) {
	for _, zipped := range []bool{false, true} {
		var buf bytes.Buffer
		sdisttest.WriteTo(&buf, sdisttest.Spec{Name: "a", Version: "1", Zip: zipped, Extension: true})
		f.Add(buf.Bytes())
	}
	f.Add(tarGz(f, []member{{name: "p-1/../x", data: "x"}}))
	f.Add(tarGz(f, []member{{name: "p-1/a", data: "x"}, {name: "p-1/a/b", data: "y"}}))
	tmp := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		base, err := os.MkdirTemp(tmp, "x")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(base)
		file, dest := filepath.Join(base, "sdist"), filepath.Join(base, "dest")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		root, err := Extract(file, dest, Limits{MaxBytes: 1 << 20, MaxFiles: 1000})
		assertContained(t, base)
		if err != nil {
			return
		}
		rel, rerr := filepath.Rel(filepath.Join(base, "dest"), root)
		if rerr != nil || strings.Contains(rel, "/") || rel == "." || rel == ".." {
			t.Fatalf("project directory %s is not one level below dest", root)
		}
		if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
			t.Fatalf("project directory %s: %v", root, err)
		}
	})
}
