package synthstack

import (
	"archive/zip"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/pylock"
)

// The benchmark's claim about its stack: >= 150 wheels, >= 40k files,
// >= 2 GB unpacked at scale 1.
func TestF5ShapedSize(t *testing.T) {
	specs := F5Shaped(1)
	var files int
	var bytes int64
	names := map[string]bool{}
	for _, s := range specs {
		f, b := s.Members()
		files += f
		bytes += b
		if names[s.Filename()] {
			t.Errorf("two wheels named %s", s.Filename())
		}
		names[s.Filename()] = true
	}
	if len(specs) < 150 || files < 40000 || bytes < 2e9 {
		t.Errorf("F5Shaped(1): %d wheels, %d files, %d bytes; want >= 150, >= 40000, >= 2e9", len(specs), files, bytes)
	}
	if small := F5Shaped(0.01); len(small) < 150 {
		t.Errorf("F5Shaped(0.01) has %d wheels; scaling must keep >= 150", len(small))
	}
}

// Wheels are deterministic, valid zips whose member count Members predicts,
// and the lock that pins them parses.
func TestWriteDeterministicAndLockParses(t *testing.T) {
	specs := append(Small("det", 3, 9),
		Spec{Name: "ns-lib", Version: "1.0", Namespace: "nvidia", Blobs: 1, BlobSize: 1 << 16, DataFiles: 2, DataSize: 100},
		Spec{Name: "broken", Version: "0.1", ImportError: true, ConsoleScript: true})
	a, err := Write(t.TempDir(), specs, 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Write(t.TempDir(), specs, 1)
	if err != nil {
		t.Fatal(err)
	}
	var entries []Entry
	for i := range a {
		if a[i].SHA256 != b[i].SHA256 || a[i].Filename != specs[i].Filename() {
			t.Errorf("%s: sha256 %s then %s, filename %s", specs[i].Name, a[i].SHA256, b[i].SHA256, a[i].Filename)
		}
		zr, err := zip.OpenReader(a[i].Path)
		if err != nil {
			t.Fatalf("%s: %v", a[i].Filename, err)
		}
		want, _ := specs[i].Members()
		if len(zr.File) != want || len(zr.File) != a[i].Files {
			t.Errorf("%s: %d members, Members says %d, Wheel.Files %d", a[i].Filename, len(zr.File), want, a[i].Files)
		}
		zr.Close()
		entries = append(entries, a[i].Entry("g", "https://example.invalid/"+a[i].Filename))
	}
	lock := Lock(entries)
	l, err := pylock.Parse("pylock.toml", lock)
	if err != nil {
		t.Fatalf("the lock does not parse: %v\n%s", err, lock)
	}
	if len(l.Packages) != len(specs) {
		t.Errorf("lock has %d packages, want %d", len(l.Packages), len(specs))
	}
	m := string(Manifest("x", "pylock.toml", []Group{{Name: "g", Required: true, Requirements: []string{"det-00"}, When: map[string]string{"cuda": ">=12"}}}))
	for _, want := range []string{`requirements = ["det-00"]`, `when = { cuda = ">=12" }`, `path = "pylock.toml"`} {
		if !strings.Contains(m, want) {
			t.Errorf("manifest lacks %s:\n%s", want, m)
		}
	}
}
