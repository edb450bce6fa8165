package wheel

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// A resumed unpack lists what the staging directory holds once
// (presentFiles, __pycache__ included) and hands the compiler the bytes of
// every source, those of a kept one as read for its check: no source is
// read back. A source cut short by the kill is written again from the
// wheel, and its bytes are the wheel's.
func TestResumeHandsKeptSourcesToTheCompiler(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"demo/__init__.py": "X = 1\n",
		"demo/sub/a.py":    "def f():\n    return 2\n",
		"demo/data.txt":    "not a source\n",
	}
	spec := wheeltest.Spec{Name: "demo", Version: "1.0"}
	for name, data := range files {
		spec.Files = append(spec.Files, wheeltest.File{Name: name, Data: []byte(data)})
	}
	p, sha, err := wheeltest.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	src := Source{Path: p, Filename: spec.Filename(), SHA256: sha}
	ref, err := (&Store{Dir: filepath.Join(dir, "ref")}).Unpack(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}

	st := &Store{Dir: filepath.Join(dir, "store"), Adopt: func(atomicfile.TempInfo, fs.DirEntry) bool { return true },
		Compiler: &Compiler{Python: "python3", CacheTag: "cpython-311"}} // never started: extract does not compile
	partial := filepath.Join(st.Dir, "."+sha+PartialSuffix+".vbtmp.otherhost.4242.0123456789ab")
	err = filepath.WalkDir(ref[0].Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() == CompleteName {
			return err
		}
		rel, _ := filepath.Rel(ref[0].Dir, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(partial, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(partial, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(partial, "demo", "sub", "a.py"), 3); err != nil { // cut short
		t.Fatal(err)
	}
	pyc := "demo/__pycache__/__init__.cpython-311.pyc"
	if err := os.MkdirAll(filepath.Join(partial, "demo", "__pycache__"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(partial, filepath.FromSlash(pyc)), []byte("bytecode"), 0o644); err != nil {
		t.Fatal(err)
	}

	pe, err := st.extract(context.Background(), src, st.ops(), SyncNone)
	if err != nil {
		t.Fatal(err)
	}
	if !pe.resumed {
		t.Fatal("the partial entry was not taken over")
	}
	for _, name := range []string{"demo/__init__.py", "demo/sub/a.py", "demo/data.txt", pyc} {
		if !pe.present[name] {
			t.Errorf("%s was there when the entry was taken over, presentFiles misses it (%v)", name, pe.present)
		}
	}
	if n, kept := st.Resumed(); n != 1 || kept < 2 {
		t.Errorf("resumed %d entries keeping %d files; want 1, and __init__.py and data.txt kept", n, kept)
	}
	for _, name := range []string{"demo/__init__.py", "demo/sub/a.py"} {
		if got := string(pe.sources[name]); got != files[name] {
			t.Errorf("the compiler is handed %q for %s, want its bytes %q", got, name, files[name])
		}
	}
	if _, ok := pe.sources["demo/data.txt"]; ok {
		t.Error("a file that gets no bytecode is handed to the compiler")
	}
}
