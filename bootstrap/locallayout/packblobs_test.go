package locallayout

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/pack"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// blobFixture is a volume whose store holds a few wheels unpacked by this
// volboot (so with blobs), and the plan of a generation of them.
type blobFixture struct {
	vol     string
	info    *interp.Info
	entries []*wheel.Entry
	files   []venv.PlannedFile
}

func newBlobFixture(t *testing.T) *blobFixture {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3 on PATH")
	}
	info, err := interp.Probe(context.Background(), "python3", interp.Cache{Dir: t.TempDir(), Write: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	big := bytes.Repeat([]byte("\x7fELF not really\n"), 20000) // 320 KB: stays on the volume
	specs := []wheeltest.Spec{
		{Name: "alpha", Version: "1.0", EntryPoints: "[console_scripts]\nalpha = alpha:main\n", Files: []wheeltest.File{
			{Name: "alpha/__init__.py", Data: []byte("def main():\n    return 0\n")},
			{Name: "alpha/sub/mod.py", Data: []byte("X = 2\n")},
			{Name: "alpha/data.json", Data: []byte(`{"a": 1}`)},
			{Name: "alpha/_ext.so", Data: big, Mode: 0o755},
			{Name: "alpha-1.0.data/scripts/alpha-tool", Data: []byte("#!/bin/sh\necho alpha\n"), Mode: 0o755},
		}},
		{Name: "beta", Version: "2.0", Files: []wheeltest.File{
			{Name: "beta/__init__.py", Data: []byte("Y = 3\n")},
			{Name: "beta/big.py", Data: append([]byte("Z = 1\n#"), bytes.Repeat([]byte("x"), 300000)...)},
			{Name: "beta/py.typed"},
		}},
		{Name: "gamma", Version: "0.1", Files: []wheeltest.File{
			{Name: "gamma.py", Data: []byte("G = 7\n")},
		}},
	}
	f := &blobFixture{vol: filepath.Join(tmp, "vol"), info: info}
	st := &wheel.Store{Dir: venv.StoreDir(f.vol), Compiler: &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag, Workers: 2}}
	var srcs []wheel.Source
	for _, s := range specs {
		p, sha, err := wheeltest.Write(tmp, s)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, wheel.Source{Path: p, Filename: s.Filename(), SHA256: sha})
	}
	if f.entries, err = st.Unpack(context.Background(), srcs...); err != nil {
		t.Fatal(err)
	}
	var pkgs []venv.Package
	for _, e := range f.entries {
		if e.Small == nil {
			t.Fatalf("store entry %s has no blob", e.Filename)
		}
		pkgs = append(pkgs, venv.Package{Entry: e, Requested: true})
	}
	b := &venv.Builder{Python: info, Creator: "volboot"}
	if f.files, err = b.Files(pkgs); err != nil {
		t.Fatal(err)
	}
	for _, pf := range f.files {
		if pf.Source != "" && (pf.Entry == nil || filepath.Join(pf.Entry.Dir, filepath.FromSlash(pf.EntryPath)) != pf.Source) {
			t.Fatalf("planned %s from %s names entry %v, path %q", pf.Path, pf.Source, pf.Entry, pf.EntryPath)
		}
	}
	return f
}

func (f *blobFixture) options(packs string, log *zap.Logger) PackOptions {
	return PackOptions{
		Volume: f.vol, Dir: packs, Generation: "gen",
		Skeleton: func(dir string) error { _, err := venv.WriteSkeleton(dir, f.info, "", "volboot"); return err },
		Files:    f.files, Scripts: "bin", Logger: log,
	}
}

// build packs the fixture's generation into a directory of its own and
// returns the pack's bytes and how many files were read from the store
// one by one.
func (f *blobFixture) build(t *testing.T, log *zap.Logger) ([]byte, int) {
	t.Helper()
	var reads atomic.Int64
	readStoreFile = func(p string) ([]byte, int64, error) {
		reads.Add(1)
		return readWithMTime(p)
	}
	defer func() { readStoreFile = readWithMTime }()
	if log == nil {
		log = zap.NewNop()
	}
	packs := t.TempDir()
	rec, err := BuildPack(context.Background(), f.options(packs, log))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(packs, PackName("gen", rec.SHA256)))
	if err != nil {
		t.Fatal(err)
	}
	return b, int(reads.Load())
}

// packedFromStore counts the plan's files a pack reads from the store.
func (f *blobFixture) packedFromStore() int {
	n := 0
	for _, pf := range f.files {
		if pf.Source != "" && Packed(pf, "bin", DefaultThreshold) {
			n++
		}
	}
	return n
}

// TestBuildPackFromBlobs: a pack of entries with blobs reads no store file
// one by one, and its bytes are the same when the blobs are not used at
// all, when one is damaged, cut short or missing (a warning, and its
// entry's files read one by one), when one lacks a file, and when the
// store's small files are gone.
func TestBuildPackFromBlobs(t *testing.T) {
	f := newBlobFixture(t)
	want, reads := f.build(t, nil)
	if reads != 0 {
		t.Fatalf("packing from blobs read %d store files one by one, want 0", reads)
	}
	total := f.packedFromStore()
	if total < 15 {
		t.Fatalf("the fixture packs only %d store files", total)
	}
	same := func(name string, got []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the pack differs from the one made from blobs (%d vs %d bytes)", name, len(got), len(want))
		}
	}

	// No blob used: every file read one by one, the same pack.
	readBlob = func(*wheel.Entry) (map[string][]byte, error) { return nil, errors.New("not today") }
	got, reads := f.build(t, nil)
	readBlob = wheel.ReadSmallBlob
	same("no blobs", got)
	if reads != total {
		t.Errorf("without blobs %d store files were read, want %d", reads, total)
	}

	// A blob lacking one file: that file alone is read.
	readBlob = func(e *wheel.Entry) (map[string][]byte, error) {
		m, err := wheel.ReadSmallBlob(e)
		delete(m, "beta/__init__.py")
		return m, err
	}
	got, reads = f.build(t, nil)
	readBlob = wheel.ReadSmallBlob
	same("a blob lacking a file", got)
	if reads != 1 {
		t.Errorf("with one file missing from a blob %d store files were read, want 1", reads)
	}

	// Damaged blobs: their entries' files are read one by one, with a
	// warning; the pack is the same.
	alpha := f.entries[0]
	blobPath := filepath.Join(alpha.Dir, wheel.SmallBlobName)
	good, _ := os.ReadFile(blobPath)
	alphaFiles := 0
	for _, pf := range f.files {
		if pf.Entry == alpha && Packed(pf, "bin", DefaultThreshold) {
			alphaFiles++
		}
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)-10] ^= 1
	for name, data := range map[string][]byte{"cut short": good[:len(good)/2], "altered": flipped, "missing": nil} {
		if data == nil {
			os.Remove(blobPath)
		} else if err := os.WriteFile(blobPath, data, 0o644); err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zap.WarnLevel)
		got, reads = f.build(t, zap.New(core))
		same(name, got)
		if reads != alphaFiles {
			t.Errorf("%s: %d store files read one by one, want alpha's %d", name, reads, alphaFiles)
		}
		if n := logs.FilterMessageSnippet("blob of small files is not usable").Len(); n != 1 {
			t.Errorf("%s: %d warnings about the blob, want 1", name, n)
		}
	}
	if err := os.WriteFile(blobPath, good, 0o644); err != nil {
		t.Fatal(err)
	}

	// With the blobs sound, the store's small files are not needed at all.
	for _, pf := range f.files {
		if pf.Source != "" && Packed(pf, "bin", DefaultThreshold) {
			if err := os.Remove(pf.Source); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
	}
	got, reads = f.build(t, nil)
	same("store files removed", got)
	if reads != 0 {
		t.Errorf("%d store files read", reads)
	}
}

// TestBuildPackOldEntries: entries without a blob (an older volboot's)
// are read one by one, and their files keep their store files' mtimes;
// entries with one get the fixed mtime. Their plans differ, so frames of
// one are never taken for the other's.
func TestBuildPackOldEntries(t *testing.T) {
	f := newBlobFixture(t)
	// beta as an older volboot made it: no blob in its manifest.
	beta := *f.entries[1]
	beta.Small = nil
	for i := range f.files {
		if f.files[i].Entry == f.entries[1] {
			f.files[i].Entry = &beta
		}
	}
	pk, reads := f.build(t, nil)
	betaFiles := 0
	for _, pf := range f.files {
		if pf.Entry == &beta && Packed(pf, "bin", DefaultThreshold) {
			betaFiles++
		}
	}
	if reads != betaFiles || betaFiles == 0 {
		t.Fatalf("%d store files read one by one, want beta's %d", reads, betaFiles)
	}
	sources := map[string]venv.PlannedFile{}
	for _, pf := range f.files {
		sources[pf.Path] = pf
	}
	r, err := pack.NewReader(bytes.NewReader(pk), "pack", "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checked := map[string]int{}
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pf, ok := sources[rec.Path]
		if !ok || pf.Source == "" || rec.Kind == pack.VolumeLink {
			continue
		}
		want := writtenMTime
		if pf.Entry == &beta {
			fi, err := os.Stat(pf.Source)
			if err != nil {
				t.Fatal(err)
			}
			want = fi.ModTime().UnixNano()
		}
		if rec.MTime != want {
			t.Errorf("%s: mtime %d, want %d", rec.Path, rec.MTime, want)
		}
		checked[strings.SplitN(pf.EntryPath, "/", 2)[0]]++
	}
	if checked["beta"] == 0 || checked["alpha"] == 0 {
		t.Fatalf("checked the mtimes of %v", checked)
	}

	items := func(fixed bool) []item {
		return []item{{path: "a.py", read: "/v/a.py", readRel: "a.py", size: 3, fixedMTime: fixed}}
	}
	if planDigest(items(true), DefaultThreshold) == planDigest(items(false), DefaultThreshold) {
		t.Error("a plan with fixed mtimes digests as one with the store's")
	}
}

// The blobs of a pack are read concurrently with the store reads of its
// frames, and dropped once their files are written: safe under -race with
// several frames.
func TestBuildPackBlobsManyFrames(t *testing.T) {
	f := newBlobFixture(t)
	// Many more records than a frame holds, all from one entry: spread the
	// fixture's files over 1,500 planned paths.
	var files []venv.PlannedFile
	for i := range 1500 {
		for _, pf := range f.files {
			if pf.Source != "" && pf.Entry == f.entries[2] {
				pf.Path = "lib/copies/d" + strings.Repeat("d", i%7) + "/" + string(rune('a'+i%26)) + "/" + strconv.Itoa(i) + "/" + pf.Path
				files = append(files, pf)
			}
		}
	}
	f.files = files
	var mu sync.Mutex
	loads := 0
	readBlob = func(e *wheel.Entry) (map[string][]byte, error) {
		mu.Lock()
		loads++
		mu.Unlock()
		return wheel.ReadSmallBlob(e)
	}
	defer func() { readBlob = wheel.ReadSmallBlob }()
	_, reads := f.build(t, nil)
	if reads != 0 || loads != 1 {
		t.Fatalf("read %d store files and the blob %d times, want 0 and 1", reads, loads)
	}
}
