package wheel_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// copyTree copies the regular files of src into dst with their modes.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, _ := d.Info()
		if err := os.WriteFile(filepath.Join(dst, rel), b, fi.Mode().Perm()); err != nil {
			return err
		}
		return os.Chmod(filepath.Join(dst, rel), fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestResumePartialEntry: a staging directory a killed writer left holds
// complete files, a file cut short, a file of the right size with the
// wrong bytes, a missing file, bytecode with wrong bytes and an executable
// whose chmod never ran. A Store whose Adopt allows it takes it over: the
// complete files are kept, every other one is written again, and the entry
// is byte for byte the one a fresh unpack makes. A Store without Adopt
// leaves it alone.
func TestResumePartialEntry(t *testing.T) {
	info := python(t)
	dir := t.TempDir()
	spec := goodSpec()
	src, comp, re := unpackRef(t, info, dir, spec)
	sha := src.SHA256

	for _, adopt := range []bool{false, true} {
		st := &wheel.Store{Dir: filepath.Join(dir, "store", map[bool]string{false: "no", true: "yes"}[adopt]), Compiler: comp}
		if adopt {
			st.Adopt = func(atomicfile.TempInfo, fs.DirEntry) bool { return true }
		}
		partial := filepath.Join(st.Dir, "."+sha+wheel.PartialSuffix+".vbtmp.otherhost.4242.0123456789ab")
		copyTree(t, re[0].Dir, partial)
		os.Remove(filepath.Join(partial, wheel.CompleteName))
		if err := os.Remove(filepath.Join(partial, "Demo_Pkg-1.0.data/headers/demo.h")); err != nil { // missing
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(partial, "demo/sub/mod.py"), []byte("def f():\n"), 0o644)                           // cut short
		os.WriteFile(filepath.Join(partial, "demo/__init__.py"), []byte("X = 9\n"), 0o644)                             // right size, wrong bytes
		os.Chmod(filepath.Join(partial, "demo/tool.sh"), 0o644)                                                        // chmod never ran
		os.WriteFile(filepath.Join(partial, "demo/__pycache__/__init__."+info.CacheTag+".pyc"), []byte("torn"), 0o644) // bytecode cut short

		es, err := st.Unpack(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		n, kept := st.Resumed()
		_, perr := os.Stat(partial)
		if !adopt {
			if n != 0 || perr != nil {
				t.Fatalf("without Adopt: resumed %d, partial: %v; want it left alone", n, perr)
			}
			continue
		}
		// 11 wheel members: RECORD (never kept), the missing, the cut
		// short and the wrong one are written again; 7 are kept.
		if n != 1 || kept != 7 {
			t.Errorf("resumed %d entries keeping %d files; want 1 and 7", n, kept)
		}
		if perr == nil {
			t.Errorf("the partial directory is still there after it was taken over")
		}
		if len(es[0].Files) != len(re[0].Files) {
			t.Fatalf("resumed entry lists %d files, a fresh one %d", len(es[0].Files), len(re[0].Files))
		}
		// Its blob (the killed writer's, copied with the rest, replaced)
		// holds what a fresh unpack's does, kept files' bytes as read for
		// their checks.
		checkBlob(t, es[0])
		if *es[0].Small != *re[0].Small {
			t.Errorf("the resumed entry's blob %+v, a fresh one's %+v", es[0].Small, re[0].Small)
		}
		for i, f := range re[0].Files {
			if es[0].Files[i] != f {
				t.Errorf("manifest row %d = %+v, fresh %+v", i, es[0].Files[i], f)
			}
			a, _ := os.ReadFile(filepath.Join(re[0].Dir, f.Path))
			b, _ := os.ReadFile(filepath.Join(es[0].Dir, f.Path))
			if !bytes.Equal(a, b) {
				t.Errorf("%s differs from a fresh unpack", f.Path)
			}
			fa, _ := os.Stat(filepath.Join(re[0].Dir, f.Path))
			fb, _ := os.Stat(filepath.Join(es[0].Dir, f.Path))
			if fa.Mode() != fb.Mode() {
				t.Errorf("%s mode %v, fresh %v", f.Path, fb.Mode(), fa.Mode())
			}
		}
	}
}

// TestResumeKeepsJournaledBytecode: a big entry (more sources than one
// compile request takes, so two chunks) journals each chunk's bytecode
// before writing it.
// A writer that resumes the entry keeps every .pyc its journal vouches for
// without compiling it again, and compiles only the ones missing or not
// matching (cut short, or the right size with other bytes); no journal is
// left in the committed entry, and a wheel may not ship one.
func TestResumeKeepsJournaledBytecode(t *testing.T) {
	info := python(t)
	dir := t.TempDir()
	spec := wheeltest.Spec{Name: "big", Version: "1.0"}
	for i := 0; i < 700; i++ {
		spec.Files = append(spec.Files, wheeltest.File{Name: fmt.Sprintf("big/m%03d.py", i), Data: []byte(fmt.Sprintf("X = %d\n", i))})
	}
	src, comp, re := unpackRef(t, info, dir, spec)
	sha := src.SHA256
	if js, _ := filepath.Glob(filepath.Join(re[0].Dir, ".volboot-bytecode-*")); len(js) != 0 {
		t.Fatalf("a committed entry carries bytecode journals: %v", js)
	}

	// The killed writer's staging directory: every source, and the
	// bytecode of the first 600 with a journal for them. Its "bytecode"
	// is a marker no compiler writes, so a kept file is told from a
	// compiled one.
	st := &wheel.Store{Dir: filepath.Join(dir, "store"), Compiler: comp,
		Adopt: func(atomicfile.TempInfo, fs.DirEntry) bool { return true }}
	partial := filepath.Join(st.Dir, "."+sha+wheel.PartialSuffix+".vbtmp.otherhost.4242.0123456789ab")
	copyTree(t, re[0].Dir, partial)
	os.Remove(filepath.Join(partial, wheel.CompleteName))
	pyc := func(i int) string { return fmt.Sprintf("big/__pycache__/m%03d.%s.pyc", i, info.CacheTag) }
	var journal []map[string]any
	for i := 0; i < 700; i++ {
		path := filepath.Join(partial, pyc(i))
		if i >= 600 {
			os.Remove(path) // never written
			continue
		}
		data := []byte(fmt.Sprintf("kept bytecode %03d", i))
		sum := sha256.Sum256(data)
		journal = append(journal, map[string]any{"path": pyc(i), "size": len(data), "sha256": hex.EncodeToString(sum[:])})
		switch i {
		case 7:
			data = data[:5] // cut short by the kill
		case 8:
			data = []byte(fmt.Sprintf("KEPT BYTECODE %03d", i)) // the right size, other bytes
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	jb, _ := json.Marshal(journal)
	if err := os.WriteFile(filepath.Join(partial, ".volboot-bytecode-dead-0.json"), jb, 0o644); err != nil {
		t.Fatal(err)
	}
	es, err := st.Unpack(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := os.ReadFile(filepath.Join(re[0].Dir, pyc(650)))
	for i := 0; i < 700; i++ {
		got, err := os.ReadFile(filepath.Join(es[0].Dir, pyc(i)))
		if err != nil {
			t.Fatal(err)
		}
		kept := bytes.HasPrefix(got, []byte("kept bytecode"))
		if want := i < 600 && i != 7 && i != 8; kept != want {
			t.Errorf("%s: kept %v, want %v (%q)", pyc(i), kept, want, got[:min(len(got), 20)])
		}
		if !kept && !bytes.Equal(got[:4], fresh[:4]) {
			t.Errorf("%s is neither kept nor compiled: %q", pyc(i), got[:min(len(got), 20)])
		}
	}
	if js, _ := filepath.Glob(filepath.Join(es[0].Dir, ".volboot-bytecode-*")); len(js) != 0 {
		t.Fatalf("the resumed entry still carries bytecode journals: %v", js)
	}
	// The kept bytecode's bytes, read for its check, are in the blob.
	checkBlob(t, es[0])
	sizes := map[string]int64{}
	for _, f := range es[0].Files {
		sizes[f.Path] = f.Size
	}
	if sizes[pyc(3)] != int64(len("kept bytecode 003")) || sizes[pyc(650)] != int64(len(fresh)) {
		t.Errorf("the manifest's sizes are not those of the files kept and written: %d, %d", sizes[pyc(3)], sizes[pyc(650)])
	}

	// A wheel shipping a name of the journals is refused.
	bad := wheeltest.Spec{Name: "sneaky", Version: "1.0", Files: []wheeltest.File{{Name: ".volboot-bytecode-x.json", Data: []byte("[]")}}}
	bp, bsha, err := wheeltest.Write(dir, bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Unpack(context.Background(), wheel.Source{Path: bp, Filename: bad.Filename(), SHA256: bsha}); err == nil || !strings.Contains(err.Error(), "reserves") {
		t.Fatalf("a wheel shipping a journal's name: %v", err)
	}
}

// unpackRef writes spec's wheel in dir and unpacks it, with bytecode, into
// a reference store there: what a resumed entry must come out as.
func unpackRef(t *testing.T, info *interp.Info, dir string, spec wheeltest.Spec) (wheel.Source, *wheel.Compiler, []*wheel.Entry) {
	t.Helper()
	p, sha, err := wheeltest.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	src := wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha}
	comp := &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag, Workers: 2}
	re, err := (&wheel.Store{Dir: filepath.Join(dir, "ref"), Compiler: comp}).Unpack(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	return src, comp, re
}
