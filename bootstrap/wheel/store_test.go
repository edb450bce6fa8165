package wheel_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

func python(t *testing.T) *interp.Info {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not on PATH: the store compiles bytecode with the real interpreter")
	}
	info, err := interp.Probe(context.Background(), "python3", interp.Cache{Dir: t.TempDir(), Write: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func goodSpec() wheeltest.Spec {
	return wheeltest.Spec{
		Name: "Demo.Pkg", Version: "1.0",
		Files: []wheeltest.File{
			{Name: "demo/__init__.py", Data: []byte("X = 1\n")},
			{Name: "demo/sub/mod.py", Data: []byte("def f():\n    return 2\n")},
			{Name: "demo/tool.sh", Data: []byte("#!/bin/sh\necho hi\n"), Mode: 0o755},
			{Name: "Demo_Pkg-1.0.data/purelib/demo_extra.py", Data: []byte("Y = 3\n")},
			{Name: "Demo_Pkg-1.0.data/scripts/demo-script", Data: []byte("#!python\nprint('x')\n")},
			{Name: "Demo_Pkg-1.0.data/data/share/demo/a.txt", Data: []byte("data\n")},
			{Name: "Demo_Pkg-1.0.data/headers/demo.h", Data: []byte("int x;\n")},
		},
		EntryPoints: "[console_scripts]\ndemo = demo.sub.mod:f\n[gui_scripts]\ndemo-gui = demo:main\n[other]\nx = y\n",
	}
}

func TestUnpackVerifiesAndCompiles(t *testing.T) {
	info := python(t)
	dir := t.TempDir()
	spec := goodSpec()
	// The filename says 1.0.0, dist-info and .data say demo_pkg-1.0: the
	// same distribution and version once normalized.
	spec.Version = "1.0.0"
	spec.DistInfoName = "demo_pkg-1.0"
	for i := range spec.Files {
		spec.Files[i].Name = strings.Replace(spec.Files[i].Name, "Demo_Pkg-1.0.data", "demo_pkg-1.0.data", 1)
	}
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
	if e.Name != "Demo.Pkg" || e.DistInfo != "demo_pkg-1.0.dist-info" || e.Data != "demo_pkg-1.0.data" || !e.RootIsPurelib {
		t.Fatalf("entry = %+v", e)
	}
	if len(e.EntryPoints) != 2 || e.EntryPoints[0] != (wheel.EntryPoint{Name: "demo", Module: "demo.sub.mod", Attr: "f"}) || !e.EntryPoints[1].GUI {
		t.Fatalf("entry points = %+v", e.EntryPoints)
	}
	files := map[string]wheel.File{}
	for _, f := range e.Files {
		files[f.Path] = f
	}
	tag := info.CacheTag
	for _, want := range []string{"demo/__pycache__/__init__." + tag + ".pyc", "demo/sub/__pycache__/mod." + tag + ".pyc", "demo_pkg-1.0.data/purelib/__pycache__/demo_extra." + tag + ".pyc"} {
		f, ok := files[want]
		if !ok || !f.Bytecode {
			t.Errorf("no bytecode %s in manifest", want)
		}
		b, err := os.ReadFile(filepath.Join(e.Dir, want))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(dir)) {
			t.Errorf("%s holds the store's absolute path", want)
		}
	}
	// The bytes are exactly what py_compile writes for the same source and
	// the same site-packages-relative name, as unchecked hash-based
	// bytecode (compile.go says why).
	ref := filepath.Join(t.TempDir(), "ref.pyc")
	out, err := exec.Command(info.Executable, "-I", "-c", "import sys, py_compile as p; p.compile(sys.argv[1], cfile=sys.argv[2], dfile=sys.argv[3], doraise=True, invalidation_mode=p.PycInvalidationMode.UNCHECKED_HASH)",
		filepath.Join(e.Dir, "demo_pkg-1.0.data/purelib/demo_extra.py"), ref, "demo_extra.py").CombinedOutput()
	if err != nil {
		t.Fatalf("py_compile: %v: %s", err, out)
	}
	want, _ := os.ReadFile(ref)
	got, _ := os.ReadFile(filepath.Join(e.Dir, "demo_pkg-1.0.data/purelib/__pycache__/demo_extra."+tag+".pyc"))
	if !bytes.Equal(got, want) {
		t.Errorf("bytecode differs from py_compile's (%d vs %d bytes)", len(got), len(want))
	}
	for p := range files {
		if strings.Contains(p, "scripts/__pycache__") || strings.Contains(p, "data/share/demo/__pycache__") {
			t.Errorf("compiled a file outside site-packages: %s", p)
		}
	}
	for name, exec := range map[string]bool{"demo/tool.sh": true, "demo_pkg-1.0.data/scripts/demo-script": true, "demo/__init__.py": false} {
		fi, err := os.Stat(filepath.Join(e.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode()&0o111 != 0; got != exec || files[name].Exec != exec {
			t.Errorf("%s executable = %v (manifest %v), want %v", name, got, files[name].Exec, exec)
		}
	}
	if f := files["demo/sub/mod.py"]; f.Hash != wheeltest.Digest([]byte("def f():\n    return 2\n")) || f.Size != 22 {
		t.Errorf("manifest row %+v", f)
	}
	// Open reads the same manifest back; a second Unpack is a no-op.
	e2, err := st.Open(sha)
	if err != nil || len(e2.Files) != len(e.Files) || e2.Dir != e.Dir {
		t.Fatalf("Open = %+v, %v", e2, err)
	}
	ents, _ := os.ReadDir(st.Dir)
	if len(ents) != 1 || ents[0].Name() != sha {
		t.Fatalf("store holds %v, want just %s", ents, sha)
	}
	if _, err := os.Stat(filepath.Join(e.Dir, wheel.CompleteName)); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentUnpackOfOneWheel(t *testing.T) {
	dir := t.TempDir()
	spec := goodSpec()
	p, sha, err := wheeltest.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate Store values, as separate workers would have.
			st := &wheel.Store{Dir: filepath.Join(dir, "store"), Jobs: 4}
			_, errs[i] = st.Unpack(context.Background(), wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "store"))
	if len(ents) != 1 {
		t.Fatalf("store holds %d entries after a race, want 1: %v", len(ents), ents)
	}
}

// TestMaliciousWheelsRefused checks that each broken wheel is refused with
// an error naming the wheel and what is wrong, and that nothing is left
// anywhere: not in the store, not beside it.
func TestMaliciousWheelsRefused(t *testing.T) {
	zeros := make([]byte, 8<<20)
	cases := []struct {
		name string
		mod  func(*wheeltest.Spec)
		want string
	}{
		{"zip-slip", func(s *wheeltest.Spec) {
			s.Files = append(s.Files, wheeltest.File{Name: "demo/../../evil.py", Data: []byte("x")})
		}, `"demo/../../evil.py": path climbs out`},
		{"absolute path", func(s *wheeltest.Spec) {
			s.Files = append(s.Files, wheeltest.File{Name: "/tmp/evil.py", Data: []byte("x")})
		}, "absolute path"},
		{"symlink entry", func(s *wheeltest.Spec) {
			s.Files = append(s.Files, wheeltest.File{Name: "demo/link", Data: []byte("/etc/passwd"), Mode: os.ModeSymlink | 0o777})
		}, `"demo/link" is a symbolic link`},
		{"RECORD hash mismatch", func(s *wheeltest.Spec) {
			s.RecordHash = map[string]string{"demo/__init__.py": wheeltest.Digest([]byte("other"))}
		}, `"demo/__init__.py": sha256`},
		{"RECORD size mismatch", func(s *wheeltest.Spec) {
			s.RecordSize = map[string]int{"demo/__init__.py": 5}
		}, `"demo/__init__.py": RECORD says 5 bytes`},
		{"file not in RECORD", func(s *wheeltest.Spec) {
			s.Raw = []wheeltest.File{{Name: "demo/stowaway.py", Data: []byte("import os")}}
		}, `"demo/stowaway.py" is not listed in RECORD`},
		{"duplicate entry", func(s *wheeltest.Spec) {
			s.Raw = []wheeltest.File{{Name: "demo/__init__.py", Data: []byte("evil")}}
		}, `"demo/__init__.py" appears twice`},
		{"zip bomb ratio", func(s *wheeltest.Spec) {
			s.Files = append(s.Files, wheeltest.File{Name: "demo/zeros.bin", Data: zeros})
		}, "zip bomb"},
		{"Wheel-Version 2", func(s *wheeltest.Spec) {
			s.WheelText = "Wheel-Version: 2.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
		}, `WHEEL: Wheel-Version "2.0" is not supported`},
		{"no Root-Is-Purelib", func(s *wheeltest.Spec) {
			s.WheelText = "Wheel-Version: 1.0\nTag: py3-none-any\n"
		}, "Root-Is-Purelib appears 0 times"},
		{"METADATA name", func(s *wheeltest.Spec) { s.MetadataName = "other-pkg" }, `METADATA: name "other-pkg" does not match`},
		{"METADATA version", func(s *wheeltest.Spec) { s.MetadataVer = "1.1" }, `METADATA: version "1.1" does not match`},
		{"dist-info name", func(s *wheeltest.Spec) { s.DistInfoName = "evil-1.0" }, `evil-1.0.dist-info: name "evil" does not match`},
		{"dist-info version", func(s *wheeltest.Spec) { s.DistInfoName = "Demo_Pkg-2.0" }, `version "2.0" does not match`},
		{"reserved name", func(s *wheeltest.Spec) {
			s.Files = append(s.Files, wheeltest.File{Name: ".complete", Data: []byte("{}")})
		}, "reserves"},
		{"unknown .data category", func(s *wheeltest.Spec) {
			s.Files = append(s.Files, wheeltest.File{Name: "Demo_Pkg-1.0.data/etc/x", Data: []byte("x")})
		}, `unknown .data category "etc"`},
		{"backslash", func(s *wheeltest.Spec) {
			s.Files = append(s.Files, wheeltest.File{Name: `demo\..\..\evil`, Data: []byte("x")})
		}, "backslash"},
		{"file and directory", func(s *wheeltest.Spec) {
			s.Files = append(s.Files, wheeltest.File{Name: "demo/__init__.py/x", Data: []byte("x")})
		}, "which is a file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			wheels := filepath.Join(root, "wheels")
			os.Mkdir(wheels, 0o755)
			spec := goodSpec()
			c.mod(&spec)
			p, sha, err := wheeltest.Write(wheels, spec)
			if err != nil {
				t.Fatal(err)
			}
			work := filepath.Join(root, "vol", "a", "b")
			st := &wheel.Store{Dir: filepath.Join(work, "store"), Limits: wheel.Limits{RatioFloor: 1 << 20}}
			es, err := st.Unpack(context.Background(), wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha})
			if err == nil {
				t.Fatalf("accepted: %+v", es[0])
			}
			if !strings.Contains(err.Error(), spec.Filename()) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not name the wheel and %q", err, c.want)
			}
			// Nothing anywhere under vol/ but the empty store directory.
			var found []string
			filepath.WalkDir(filepath.Join(root, "vol"), func(p string, d os.DirEntry, err error) error {
				if p != filepath.Join(root, "vol") && p != filepath.Dir(work) && p != work && p != st.Dir {
					found = append(found, p)
				}
				return nil
			})
			if len(found) > 0 {
				t.Fatalf("left behind: %v", found)
			}
			if _, err := os.Stat(filepath.Join(root, "evil.py")); err == nil {
				t.Fatal("zip-slip wrote outside the store")
			}
		})
	}
}

func TestAbsoluteSizeLimit(t *testing.T) {
	dir := t.TempDir()
	spec := goodSpec()
	spec.Files = append(spec.Files, wheeltest.File{Name: "demo/big.bin", Data: make([]byte, 3<<20)})
	p, sha, err := wheeltest.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	st := &wheel.Store{Dir: filepath.Join(dir, "store"), Limits: wheel.Limits{MaxUnpacked: 2 << 20}}
	if _, err := st.Unpack(context.Background(), wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha}); err == nil || !strings.Contains(err.Error(), "zip bomb limit") {
		t.Fatalf("err = %v", err)
	}
}

func TestUnpackBatchKeepsGoodWheels(t *testing.T) {
	dir := t.TempDir()
	good := goodSpec()
	bad := goodSpec()
	bad.Name = "bad"
	bad.RecordHash = map[string]string{"demo/__init__.py": wheeltest.Digest(nil)}
	gp, gsha, _ := wheeltest.Write(dir, good)
	bp, bsha, _ := wheeltest.Write(dir, bad)
	st := &wheel.Store{Dir: filepath.Join(dir, "store")}
	es, err := st.Unpack(context.Background(),
		wheel.Source{Path: gp, Filename: good.Filename(), SHA256: gsha},
		wheel.Source{Path: bp, Filename: bad.Filename(), SHA256: bsha})
	if err == nil || !strings.Contains(err.Error(), bad.Filename()) || strings.Contains(err.Error(), good.Filename()) {
		t.Fatalf("err = %v", err)
	}
	if es[0] == nil || es[1] != nil {
		t.Fatalf("entries = %v", es)
	}
	if _, err := st.Open(gsha); err != nil {
		t.Fatal(err)
	}
}

// TestCompilerFailure: an interpreter that dies is an error naming the
// wheel, not a hang, and leaves nothing in the store.
func TestCompilerFailure(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "python")
	os.WriteFile(fake, []byte("#!/bin/sh\necho compiler exploded >&2\nexit 7\n"), 0o755)
	spec := goodSpec()
	p, sha, _ := wheeltest.Write(dir, spec)
	st := &wheel.Store{Dir: filepath.Join(dir, "store"), Compiler: &wheel.Compiler{Python: fake, CacheTag: "cpython-311"}}
	_, err := st.Unpack(context.Background(), wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha})
	if err == nil || !strings.Contains(err.Error(), spec.Filename()) || !strings.Contains(err.Error(), "compiler exploded") {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(st.Dir); len(ents) != 0 {
		t.Fatalf("store holds %v", ents)
	}
}

// An entry whose manifest was read but is not a valid one (damaged, cut
// short, for another wheel) is unpacked again, and a generation's hard
// links to its old files keep working meanwhile. A newer volboot's entry
// is left alone with an error that says so.
func TestUnreadableManifestIsUnpackedAgain(t *testing.T) {
	dir := t.TempDir()
	spec := goodSpec()
	p, sha, err := wheeltest.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	st := &wheel.Store{Dir: filepath.Join(dir, "store")}
	src := wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha}
	es, err := st.Unpack(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(dir, "kept.py")
	if err := os.Link(filepath.Join(es[0].Dir, "demo", "__init__.py"), kept); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(es[0].Dir, wheel.CompleteName))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	for name, damage := range map[string][]byte{
		"cut mid-line":      good[:len(good)-5],
		"cut at a line end": []byte(strings.Join(lines[:len(lines)-2], "")),
		"another wheel":     []byte(strings.Replace(string(good), sha, strings.Repeat("0", 64), 1)),
		"not json":          []byte("{\n"),
	} {
		if err := os.WriteFile(filepath.Join(es[0].Dir, wheel.CompleteName), damage, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Open(sha); err == nil {
			t.Fatalf("%s: the damaged manifest opened", name)
		}
		got, err := st.Unpack(context.Background(), src)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got[0].Files) != len(es[0].Files) {
			t.Fatalf("%s: %d files after unpacking again, want %d", name, len(got[0].Files), len(es[0].Files))
		}
		if _, err := st.Open(sha); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// A newer volboot's entry is left alone, and the unpack says why.
	newer := []byte(`{"schema":9,"sha256":"` + sha + `"}` + "\n")
	if err := os.WriteFile(filepath.Join(es[0].Dir, wheel.CompleteName), newer, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Unpack(context.Background(), src); err == nil || !strings.Contains(err.Error(), "newer volboot") || !strings.Contains(err.Error(), spec.Filename()) {
		t.Errorf("unpacking over a newer volboot's entry: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(es[0].Dir, wheel.CompleteName)); string(b) != string(newer) {
		t.Error("the newer volboot's manifest was replaced")
	}
	if b, err := os.ReadFile(kept); err != nil || len(b) == 0 {
		t.Fatalf("the hard link to the old entry's file: %q %v", b, err)
	}
	ents, _ := os.ReadDir(st.Dir)
	for _, e := range ents {
		if _, temp := atomicfile.ParseTempName(e.Name()); temp {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if len(ents) != 1 {
		t.Errorf("the store holds %d names, want the one entry", len(ents))
	}
}

// An Unpacker takes wheels as they come, from several goroutines, while it
// is already unpacking earlier ones; each result sits at the index Add
// gave; a bad wheel fails alone; an entry already complete is returned as
// it is; the bytecode of every wheel is compiled by the one interpreter.
func TestUnpackerTakesWheelsAsTheyCome(t *testing.T) {
	info := python(t)
	dir := t.TempDir()
	var srcs []wheel.Source
	for i := range 6 {
		spec := wheeltest.Spec{Name: fmt.Sprintf("pkg%d", i), Version: "1.0", Files: []wheeltest.File{
			{Name: "demo/__init__.py", Data: []byte(fmt.Sprintf("X = %d\n", i))},
			{Name: "demo/sub/mod.py", Data: []byte("def f():\n    return 2\n")},
		}}
		if i == 3 {
			spec.RecordHash = map[string]string{"demo/__init__.py": wheeltest.Digest(nil)}
		}
		p, sha, err := wheeltest.Write(dir, spec)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha})
	}
	st := &wheel.Store{Dir: filepath.Join(dir, "store"), Compiler: &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag}}
	// One entry is there before.
	pre, err := st.Unpack(context.Background(), srcs[5])
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.NewUnpacker(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	idx := make([]int, len(srcs))
	idx[0] = u.Add(srcs[0])
	// Wait until the first is complete before handing over the rest: in
	// the store, and done for the Unpacker (which it is only once the
	// store's directory is synced after the rename).
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := st.Open(srcs[0].SHA256); err == nil && u.Unpacked() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first wheel was not unpacked before Wait")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := 1; i < len(srcs); i++ {
		wg.Go(func() {
			k := u.Add(srcs[i])
			mu.Lock()
			idx[i] = k
			mu.Unlock()
		})
	}
	wg.Wait()
	if n := u.Pending(); n < 0 || n > len(srcs)-1 {
		t.Errorf("%d pending of %d added, the first finished", n, len(srcs))
	}
	got, errs := u.Wait()
	if n := u.Pending(); n != 0 {
		t.Errorf("%d pending after Wait", n)
	}
	if len(got) != len(srcs) || len(errs) != len(srcs) {
		t.Fatalf("%d entries and %d errors for %d wheels", len(got), len(errs), len(srcs))
	}
	for i, src := range srcs {
		e, err := got[idx[i]], errs[idx[i]]
		if i == 3 {
			if e != nil || err == nil || !strings.Contains(err.Error(), src.Filename) {
				t.Errorf("bad wheel: entry %v, error %v", e, err)
			}
			continue
		}
		if err != nil || e == nil || e.SHA256 != src.SHA256 {
			t.Fatalf("%s: entry %+v, error %v", src.Filename, e, err)
		}
		if _, err := os.Stat(filepath.Join(e.Dir, "demo", "__pycache__", "__init__."+info.CacheTag+".pyc")); err != nil {
			t.Errorf("%s: no bytecode: %v", src.Filename, err)
		}
	}
	if got[idx[5]].Dir != pre[0].Dir {
		t.Errorf("the entry that was there moved: %s, was %s", got[idx[5]].Dir, pre[0].Dir)
	}
	if ents, _ := os.ReadDir(st.Dir); len(ents) != 5 {
		t.Errorf("store holds %d entries, want 5 (nothing of the bad wheel)", len(ents))
	}
}

// Cancelling an Unpacker's context fails the wheels it has not finished,
// and Wait still returns with nothing half written left in the store.
func TestUnpackerCancelled(t *testing.T) {
	dir := t.TempDir()
	var srcs []wheel.Source
	for i := range 3 {
		spec := wheeltest.Spec{Name: fmt.Sprintf("cancel%d", i), Version: "1.0", Files: []wheeltest.File{
			{Name: "demo/__init__.py", Data: []byte(fmt.Sprintf("X = %d\n", i))},
			{Name: "demo/sub/mod.py", Data: []byte("def f():\n    return 2\n")},
		}}
		p, sha, err := wheeltest.Write(dir, spec)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha})
	}
	st := &wheel.Store{Dir: filepath.Join(dir, "store")}
	ctx, cancel := context.WithCancel(context.Background())
	u, err := st.NewUnpacker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	for _, src := range srcs {
		u.Add(src)
	}
	got, errs := u.Wait()
	for i := range srcs {
		if got[i] != nil || !errors.Is(errs[i], context.Canceled) {
			t.Errorf("%s: entry %v, error %v; want context.Canceled", srcs[i].Filename, got[i], errs[i])
		}
	}
	if ents, _ := os.ReadDir(st.Dir); len(ents) != 0 {
		t.Errorf("store holds %v after a cancelled unpack", ents)
	}
}

// A sync stopped by a signal cancels the Unpacker's context, which kills
// the bytecode compiler: an expected end, not a warning.
func TestUnpackerCancelledCompilerIsNotAWarning(t *testing.T) {
	info := python(t)
	dir := t.TempDir()
	spec := goodSpec()
	p, sha, err := wheeltest.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	st := &wheel.Store{Dir: filepath.Join(dir, "store"), Logger: zap.New(core),
		Compiler: &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag, Workers: 2}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u, err := st.NewUnpacker(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u.Add(wheel.Source{Path: p, Filename: spec.Filename(), SHA256: sha})
	// Once the entry is complete the compiler is running and idle: the
	// cancellation is what ends it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := st.Open(sha); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the wheel was not unpacked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	u.Wait()
	if warns := logs.FilterLevelExact(zap.WarnLevel).All(); len(warns) > 0 {
		t.Errorf("a cancelled unpack logged warnings: %+v", warns)
	}
	if logs.FilterMessageSnippet("bytecode compiler").Len() != 1 {
		t.Errorf("the compiler's end is not at debug level: %+v", logs.All())
	}
}
