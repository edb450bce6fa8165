package wheel_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/pack"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// checkBlob requires e to have a blob holding exactly its small files
// (below pack.DefaultThreshold, what pack.AlwaysPacked names, and
// scripts), each of the bytes its store file holds.
func checkBlob(t *testing.T, e *wheel.Entry) {
	t.Helper()
	if e.Small == nil {
		t.Fatalf("store entry %s has no blob of small files", e.Filename)
	}
	got, err := wheel.ReadSmallBlob(e)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, f := range e.Files {
		small := f.Size < pack.DefaultThreshold || pack.AlwaysPacked(f.Path) ||
			e.Data != "" && (strings.HasPrefix(f.Path, e.Data+"/scripts/") || strings.HasPrefix(f.Path, e.Data+"/data/bin/"))
		b, in := got[f.Path]
		if in != small {
			t.Errorf("%s (%d bytes): in the blob %v, want %v", f.Path, f.Size, in, small)
			continue
		}
		if !in {
			continue
		}
		want++
		disk, err := os.ReadFile(filepath.Join(e.Dir, filepath.FromSlash(f.Path)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, disk) {
			t.Errorf("%s: the blob's bytes differ from the store file's", f.Path)
		}
	}
	if len(got) != want || e.Small.Files != want {
		t.Errorf("the blob holds %d files (manifest: %d), want %d", len(got), e.Small.Files, want)
	}
}

// bigSpec is goodSpec with files at and around the blob's threshold: a
// big extension module stays out, a big source, a big script and a big
// file in dist-info go in.
func bigSpec() wheeltest.Spec {
	s := goodSpec()
	big := bytes.Repeat([]byte("# a big file\n"), (pack.DefaultThreshold/13)+1)
	s.Files = append(s.Files,
		wheeltest.File{Name: "demo/_ext.so", Data: big},
		wheeltest.File{Name: "demo/_small.so", Data: big[:pack.DefaultThreshold-1]},
		wheeltest.File{Name: "demo/big.py", Data: big},
		wheeltest.File{Name: "Demo_Pkg-1.0.data/scripts/big-script", Data: big, Mode: 0o755},
		wheeltest.File{Name: "Demo_Pkg-1.0.data/data/bin/big-tool", Data: big, Mode: 0o755},
		wheeltest.File{Name: "Demo_Pkg-1.0.data/data/share/big.dat", Data: big},
		wheeltest.File{Name: "Demo_Pkg-1.0.dist-info/licenses/LICENSE", Data: big},
	)
	return s
}

// TestSmallBlobWritten: a committed entry carries a blob of its small
// files, bytecode and RECORD included, that its manifest describes, and
// that reads back as the store files' bytes; Open finds the same
// description.
func TestSmallBlobWritten(t *testing.T) {
	info := python(t)
	dir := t.TempDir()
	spec := bigSpec()
	p, sha, err := wheeltest.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	st := &wheel.Store{Dir: filepath.Join(dir, "store"), Compiler: &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag, Workers: 2}}
	es, err := st.Unpack(context.Background(), wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha})
	if err != nil {
		t.Fatal(err)
	}
	e := es[0]
	checkBlob(t, e)
	got, _ := wheel.ReadSmallBlob(e)
	for _, name := range []string{"demo/__pycache__/big." + info.CacheTag + ".pyc", "Demo_Pkg-1.0.dist-info/RECORD", "demo/big.py"} {
		if _, ok := got[name]; !ok {
			t.Errorf("the blob lacks %s", name)
		}
	}
	if _, ok := got["demo/_ext.so"]; ok {
		t.Error("the blob holds a big extension module")
	}
	fi, err := os.Stat(filepath.Join(e.Dir, wheel.SmallBlobName))
	if err != nil || fi.Size() != e.Small.Size {
		t.Fatalf("blob file: %v, %v; the manifest says %d bytes", fi, err, e.Small.Size)
	}
	again, err := st.Open(sha)
	if err != nil {
		t.Fatal(err)
	}
	if again.Small == nil || *again.Small != *e.Small {
		t.Fatalf("Open reads blob %+v, the unpack made %+v", again.Small, e.Small)
	}
	// The blob is no file of the entry: generations never link it.
	for _, f := range e.Files {
		if f.Path == wheel.SmallBlobName {
			t.Fatal("the manifest lists the blob as a file of the entry")
		}
	}
	// A wheel may not ship the blob's name.
	bad := wheeltest.Spec{Name: "sneaky", Version: "1.0", Files: []wheeltest.File{{Name: wheel.SmallBlobName, Data: []byte("x")}}}
	bp, bsha, err := wheeltest.Write(dir, bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Unpack(context.Background(), wheel.Source{Path: bp, Filename: bad.Filename(), SHA256: bsha}); err == nil || !strings.Contains(err.Error(), "reserves") {
		t.Fatalf("a wheel shipping the blob's name: %v", err)
	}
}

// TestSmallBlobDamaged: a blob that is missing, cut short, altered,
// longer, or that the manifest describes otherwise is refused whole.
func TestSmallBlobDamaged(t *testing.T) {
	dir := t.TempDir()
	p, sha, err := wheeltest.Write(dir, goodSpec())
	if err != nil {
		t.Fatal(err)
	}
	st := &wheel.Store{Dir: filepath.Join(dir, "store")}
	es, err := st.Unpack(context.Background(), wheel.Source{Path: p, Filename: goodSpec().Filename(), SHA256: sha})
	if err != nil {
		t.Fatal(err)
	}
	e := es[0]
	checkBlob(t, e)
	path := filepath.Join(e.Dir, wheel.SmallBlobName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	for name, data := range map[string][]byte{
		"cut short": good[:len(good)-3],
		"altered":   flipped,
		"longer":    append(bytes.Clone(good), 0),
		"empty":     {},
	} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if files, err := wheel.ReadSmallBlob(e); err == nil {
			t.Errorf("%s: read %d files from a damaged blob", name, len(files))
		}
	}
	os.Remove(path)
	if _, err := wheel.ReadSmallBlob(e); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*wheel.Entry){
		"other sha256":     func(e *wheel.Entry) { e.Small.SHA256 = strings.Repeat("0", 64) },
		"other size":       func(e *wheel.Entry) { e.Small.Size-- },
		"other file count": func(e *wheel.Entry) { e.Small.Files++ },
		"other bytes":      func(e *wheel.Entry) { e.Small.Bytes++ },
		"a file's size":    func(e *wheel.Entry) { e.Files[0].Size++ },
		"a file's hash":    func(e *wheel.Entry) { e.Files[len(e.Files)-1].Hash = wheeltest.Digest([]byte("other")) },
		"a file's mode":    func(e *wheel.Entry) { e.Files[0].Exec = !e.Files[0].Exec },
		"no such file":     func(e *wheel.Entry) { e.Files = e.Files[1:] },
		"no blob":          func(e *wheel.Entry) { e.Small = nil },
	} {
		c := *e
		s := *e.Small
		c.Small = &s
		c.Files = append([]wheel.File(nil), e.Files...)
		mod(&c)
		if files, err := wheel.ReadSmallBlob(&c); err == nil {
			t.Errorf("%s: read %d files of a blob the manifest does not describe", name, len(files))
		}
	}
	if _, err := wheel.ReadSmallBlob(e); err != nil {
		t.Fatalf("the good blob back: %v", err)
	}
}

// TestSmallBlobKilledBeforeManifest: a writer killed after it wrote the
// blob and before the manifest leaves a staging directory, nothing at the
// entry's name; the next writer that takes the directory over writes the
// blob again, and the entry it commits describes its own blob.
func TestSmallBlobKilledBeforeManifest(t *testing.T) {
	info := python(t)
	dir := t.TempDir()
	spec := bigSpec()
	src, comp, re := unpackRef(t, info, dir, spec)
	st := &wheel.Store{Dir: filepath.Join(dir, "store"), Compiler: comp}
	// The killed writer's staging directory: every file and a blob, no
	// manifest. Its blob is not the one a writer makes (a kill cut it
	// short).
	partial := filepath.Join(st.Dir, "."+src.SHA256+wheel.PartialSuffix+".vbtmp.otherhost.4242.0123456789ab")
	copyTree(t, re[0].Dir, partial)
	os.Remove(filepath.Join(partial, wheel.CompleteName))
	blob, _ := os.ReadFile(filepath.Join(partial, wheel.SmallBlobName))
	if err := os.WriteFile(filepath.Join(partial, wheel.SmallBlobName), blob[:len(blob)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Open(src.SHA256); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a staging directory with a blob and no manifest opens: %v", err)
	}
	st.Adopt = func(atomicfile.TempInfo, fs.DirEntry) bool { return true }
	es, err := st.Unpack(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if n, kept := st.Resumed(); n != 1 || kept == 0 {
		t.Fatalf("resumed %d entries keeping %d files", n, kept)
	}
	checkBlob(t, es[0])
	if *es[0].Small != *re[0].Small {
		t.Errorf("the resumed entry's blob %+v, a fresh one %+v", es[0].Small, re[0].Small)
	}
}

// FuzzDecodeSmallBlob: whatever the bytes, DecodeSmallBlob does not panic,
// and what it returns are files of the entry of the manifest's sizes and
// hashes. The manifest is made to describe the bytes' digest and size, so
// that the fuzzer reaches past the digest check.
func FuzzDecodeSmallBlob(f *testing.F) {
	files := map[string][]byte{
		"a/__init__.py":        []byte("X = 1\n"),
		"a/b.py":               []byte("def f():\n    return 2\n"),
		"a/run.sh":             []byte("#!/bin/sh\n"),
		"a-1.dist-info/RECORD": []byte("a/__init__.py,,\n"),
	}
	e := &wheel.Entry{Dir: "entry"}
	var total int64
	for _, p := range []string{"a-1.dist-info/RECORD", "a/__init__.py", "a/b.py", "a/run.sh"} {
		fl := wheel.File{Path: p, Size: int64(len(files[p])), Exec: p == "a/run.sh"}
		if !strings.HasSuffix(p, "RECORD") {
			fl.Hash = wheeltest.Digest(files[p])
		}
		e.Files = append(e.Files, fl)
		total += fl.Size
	}
	seed := func(recs []wheel.File) []byte {
		var buf bytes.Buffer
		w, err := pack.NewWriter(&buf)
		if err != nil {
			f.Fatal(err)
		}
		for _, r := range recs {
			if err := w.File(r.Path, r.Exec, 0, files[r.Path]); err != nil {
				f.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			f.Fatal(err)
		}
		return buf.Bytes()
	}
	f.Add(seed(e.Files))
	f.Add(seed(e.Files[1:]))
	f.Add(seed(nil))
	f.Add([]byte(pack.Magic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		sum := sha256.Sum256(data)
		c := *e
		c.Small = &wheel.SmallBlob{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data)), Files: len(e.Files), Bytes: total}
		got, err := wheel.DecodeSmallBlob(bytes.NewReader(data), &c)
		if err != nil {
			return
		}
		if len(got) != len(e.Files) {
			t.Fatalf("%d files, the manifest says %d", len(got), len(e.Files))
		}
		for _, fl := range e.Files {
			if !bytes.Equal(got[fl.Path], files[fl.Path]) && fl.Hash != "" || int64(len(got[fl.Path])) != fl.Size {
				t.Fatalf("%s: %q", fl.Path, got[fl.Path])
			}
		}
	})
}
