package venv_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
	"github.com/volboot/volboot/integration/testenv"
)

// TestTorchNvidiaLayout builds, with gcc against the machine's Python
// headers, a wheel shipping fakens/fakecublas/lib/libfakecublas.so and a
// wheel whose extension reaches it through an RPATH climbing out of its own
// package ($ORIGIN/../../fakens/fakecublas/lib, as torch reaches
// nvidia/cublas/lib). After volboot installs both (with a third wheel
// sharing fakens/), the extension imports and calls into the library, and
// the library is loaded from the generation, not the store.
func TestTorchNvidiaLayout(t *testing.T) {
	info := python(t)
	testenv.Command(t, "gcc", "gcc")
	if _, err := os.Stat(filepath.Join(info.Include, "Python.h")); err != nil {
		testenv.Missing(t, "no Python headers at %s (for Debian's python3: python3-dev, which .ci/run installs)", info.Include)
	}
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	os.Mkdir(src, 0o755)
	os.WriteFile(filepath.Join(src, "fakecublas.c"), []byte("int fakecublas_gemm(int a, int b) { return a * b + 7; }\n"), 0o644)
	os.WriteFile(filepath.Join(src, "ext.c"), []byte(`#define PY_SSIZE_T_CLEAN
#include <Python.h>
extern int fakecublas_gemm(int, int);
static PyObject *gemm(PyObject *self, PyObject *args) {
    int a, b;
    if (!PyArg_ParseTuple(args, "ii", &a, &b)) return NULL;
    return PyLong_FromLong(fakecublas_gemm(a, b));
}
static PyMethodDef methods[] = {{"gemm", gemm, METH_VARARGS, "a*b+7"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_C", NULL, -1, methods};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&mod); }
`), 0o644)
	lib := filepath.Join(src, "libfakecublas.so")
	run(t, src, "gcc", "-shared", "-fPIC", "-O1", "-o", lib, "fakecublas.c")
	ext := filepath.Join(src, "_C"+info.ExtSuffix)
	run(t, src, "gcc", "-shared", "-fPIC", "-O1", "-I", info.Include, "-o", ext, "ext.c",
		"-L"+src, "-lfakecublas", "-Wl,-rpath,$ORIGIN/../../fakens/fakecublas/lib")
	libData, _ := os.ReadFile(lib)
	extData, _ := os.ReadFile(ext)

	tag := "cp" + strings.ReplaceAll(info.PyVersion(), ".", "") + "-" + info.ABI() + "-linux_" + info.Machine
	cublas := wheeltest.Spec{Name: "fakens-cublas", Version: "12.8.4.1", Tag: "py3-none-" + "manylinux_2_17_" + info.Machine, Platlib: true,
		Files: []wheeltest.File{
			{Name: "fakens/__init__.py"},
			{Name: "fakens/fakecublas/__init__.py"},
			{Name: "fakens/fakecublas/lib/__init__.py"},
			{Name: "fakens/fakecublas/lib/libfakecublas.so", Data: libData, Mode: 0o755},
		}}
	cudnn := wheeltest.Spec{Name: "fakens-cudnn", Version: "9.1", Tag: cublas.Tag, Platlib: true,
		Files: []wheeltest.File{
			{Name: "fakens/__init__.py"}, // the same empty file: shared, not a conflict
			{Name: "fakens/fakecudnn/__init__.py", Data: []byte("OK = True\n")},
		}}
	torch := wheeltest.Spec{Name: "faketorch", Version: "2.8.0", Tag: tag, Platlib: true,
		Files: []wheeltest.File{
			{Name: "faketorch/__init__.py", Data: []byte("from faketorch.lib._C import gemm\n")},
			{Name: "faketorch/lib/__init__.py"},
			{Name: "faketorch/lib/_C" + info.ExtSuffix, Data: extData, Mode: 0o755},
		}}
	ws := []wheelFile{specWheel(t, tmp, cublas), specWheel(t, tmp, cudnn), specWheel(t, tmp, torch)}
	volume := filepath.Join(tmp, "vol")
	gen := install(t, info, volume, "gen-gpu", ws, venv.Hardlink)
	out := run(t, "", filepath.Join(gen, "bin", "python"), "-c", `
import faketorch, fakens.fakecudnn
print(faketorch.gemm(6, 7), fakens.fakecudnn.OK)
print([l.split()[-1] for l in open('/proc/self/maps') if 'libfakecublas' in l][0])
`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != "49 True" {
		t.Fatalf("extension call printed %q", out)
	}
	wantLib := filepath.Join(gen, "lib", "python"+info.PyVersion(), "site-packages", "fakens", "fakecublas", "lib", "libfakecublas.so")
	if lines[1] != wantLib {
		t.Errorf("library loaded from %s, want %s (the generation, not the store)", lines[1], wantLib)
	}
	// It is still the store's file: a hard link, not a copy.
	var a, b syscall.Stat_t
	syscall.Stat(wantLib, &a)
	matches, _ := filepath.Glob(filepath.Join(volume, ".volboot", "store", "*", "fakens", "fakecublas", "lib", "libfakecublas.so"))
	if len(matches) != 1 {
		t.Fatalf("store copies of the library: %v", matches)
	}
	syscall.Stat(matches[0], &b)
	if a.Ino != b.Ino {
		t.Errorf("generation file is not a hard link to the store")
	}
}

func TestConflicts(t *testing.T) {
	info := python(t)
	tmp := t.TempDir()
	mk := func(name, body string, extra ...wheeltest.File) wheelFile {
		s := wheeltest.Spec{Name: name, Version: "1.0", Files: append([]wheeltest.File{
			{Name: name + "/__init__.py"},
			{Name: "shared/common.py", Data: []byte(body)},
		}, extra...)}
		return specWheel(t, tmp, s)
	}
	a := mk("pkg_a", "X = 1\n")
	same := mk("pkg_b", "X = 1\n")
	differ := mk("pkg_c", "X = 2\n")
	volume := filepath.Join(tmp, "vol")

	gen := install(t, info, volume, "ok", []wheelFile{a, same}, venv.Hardlink)
	for _, d := range []string{"pkg_a-1.0.dist-info", "pkg_b-1.0.dist-info"} {
		rec, err := os.ReadFile(filepath.Join(gen, "lib", "python"+info.PyVersion(), "site-packages", d, "RECORD"))
		if err != nil || !strings.Contains(string(rec), "shared/common.py,sha256=") {
			t.Errorf("%s/RECORD does not list the shared file: %s %v", d, rec, err)
		}
	}

	_, err := installErr(info, volume, "bad", []wheelFile{a, differ}, venv.Hardlink)
	if err == nil || !strings.Contains(err.Error(), a.filename) || !strings.Contains(err.Error(), differ.filename) ||
		!strings.Contains(err.Error(), "shared/common.py") {
		t.Fatalf("conflict error %v does not name both wheels and the path", err)
	}
	hijack := specWheel(t, tmp, wheeltest.Spec{Name: "hijack", Version: "1.0", Files: []wheeltest.File{
		{Name: "hijack-1.0.data/scripts/python", Data: []byte("#!/bin/sh\necho owned\n")},
	}})
	_, err = installErr(info, volume, "bad2", []wheelFile{hijack}, venv.Hardlink)
	if err == nil || !strings.Contains(err.Error(), "bin/python") || !strings.Contains(err.Error(), hijack.filename) {
		t.Fatalf("overwriting bin/python: %v", err)
	}
	// A path one wheel ships as a file and another as a directory, in
	// either order, before many other wheels (so workers are making files
	// while the plan is still claimed) or after them: the plan's error
	// names both, whatever the workers ran into.
	dirWheel := specWheel(t, tmp, wheeltest.Spec{Name: "dirw", Version: "1.0", Files: []wheeltest.File{{Name: "x/foo/bar.py", Data: []byte("B = 1\n")}}})
	fileWheel := specWheel(t, tmp, wheeltest.Spec{Name: "filew", Version: "1.0", Files: []wheeltest.File{{Name: "x/foo", Data: []byte("not a dir\n")}}})
	var filler []wheelFile
	for i := range 30 {
		filler = append(filler, specWheel(t, tmp, wheeltest.Spec{Name: fmt.Sprintf("fill%02d", i), Version: "1.0",
			Files: []wheeltest.File{{Name: fmt.Sprintf("fill%02d/a.py", i)}, {Name: fmt.Sprintf("fill%02d/b.py", i)}}}))
	}
	for k, order := range [][]wheelFile{
		append([]wheelFile{dirWheel, fileWheel}, filler...),
		append([]wheelFile{fileWheel, dirWheel}, filler...),
		append(append([]wheelFile{dirWheel}, filler...), fileWheel),
	} {
		for run := range 3 {
			_, err = installErr(info, volume, fmt.Sprintf("filedir%d%d", k, run), order, venv.Hardlink)
			if err == nil || !strings.Contains(err.Error(), fileWheel.filename+" provides file lib/python"+info.PyVersion()+"/site-packages/x/foo, but "+dirWheel.filename+" puts") {
				t.Fatalf("file/directory conflict (order %d): %v", k, err)
			}
		}
	}
	ents, _ := os.ReadDir(filepath.Join(volume, ".volboot", "envs"))
	if len(ents) != 1 || ents[0].Name() != "ok" {
		t.Fatalf("envs holds %v after failed builds, want only ok", ents)
	}
}

// TestCopyModeAndRequested builds in copy mode: no file shares an inode
// with the store, bytecode stays valid (mtimes kept), REQUESTED only for
// requested packages, and a second Build of a complete id is a no-op.
func TestCopyModeAndRequested(t *testing.T) {
	info := python(t)
	tmp := t.TempDir()
	top := specWheel(t, tmp, wheeltest.Spec{Name: "top", Version: "1.0", Files: []wheeltest.File{{Name: "top.py", Data: []byte("import dep\nV = dep.V\n")}}})
	dep := specWheel(t, tmp, wheeltest.Spec{Name: "dep", Version: "0.1", Files: []wheeltest.File{{Name: "dep.py", Data: []byte("V = 5\n")}}})
	dep.requested = false
	volume := filepath.Join(tmp, "vol")
	gen := install(t, info, volume, "copy", []wheelFile{top, dep}, venv.Copy)
	sp := filepath.Join(gen, "lib", "python"+info.PyVersion(), "site-packages")
	if _, err := os.Stat(filepath.Join(sp, "top-1.0.dist-info", "REQUESTED")); err != nil {
		t.Error("top has no REQUESTED")
	}
	if _, err := os.Stat(filepath.Join(sp, "dep-0.1.dist-info", "REQUESTED")); err == nil {
		t.Error("dep has REQUESTED but was not requested")
	}
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(sp, "dep.py"), &st)
	if st.Nlink != 1 {
		t.Errorf("copy mode: dep.py has %d links", st.Nlink)
	}
	before := fileSet(t, gen)
	if out := run(t, "", filepath.Join(gen, "bin", "python"), "-c", "import top; print(top.V)"); strings.TrimSpace(out) != "5" {
		t.Fatalf("import printed %q", out)
	}
	if a, b := diff(before, fileSet(t, gen)); len(a)+len(b) > 0 {
		t.Errorf("importing rewrote bytecode (copied mtimes lost?): %v %v", a, b)
	}
	m, err := venv.ReadMarker(gen)
	if err != nil || len(m.Packages) != 2 || m.Packages[0].Name != "top" || !m.Packages[0].Requested {
		t.Fatalf("marker %+v %v", m, err)
	}
	// Building a complete id again returns it untouched.
	if _, err := installErr(info, volume, "copy", []wheelFile{top}, venv.Copy); err != nil {
		t.Fatal(err)
	}
	if m2, _ := venv.ReadMarker(gen); len(m2.Packages) != 2 {
		t.Fatal("rebuilt a complete generation")
	}
}

func TestActivate(t *testing.T) {
	info := python(t)
	tmp := t.TempDir()
	volume := filepath.Join(tmp, "vol")
	gen := install(t, info, volume, "act", nil, venv.Hardlink)
	if err := os.Symlink(filepath.Join(".volboot", "envs", "act"), filepath.Join(volume, "venv")); err != nil {
		t.Fatal(err)
	}
	// Each shell is a subtest, so that one not installed here is a skip
	// that make test lists (and a failure in CI), not a silent pass.
	for _, sh := range []struct{ name, debian string }{{"bash", "bash"}, {"zsh", "zsh"}, {"ksh", "ksh93u+m"}} {
		t.Run(sh.name, func(t *testing.T) {
			testenv.Command(t, sh.name, sh.debian)
			for _, root := range []string{gen, filepath.Join(volume, "venv")} {
				out := run(t, tmp, sh.name, "-c", `. "$1/bin/activate" && echo "$VIRTUAL_ENV" && command -v python && python -c 'import sys; print(sys.prefix != sys.base_prefix)' && deactivate && echo "${VIRTUAL_ENV:-unset}"`, sh.name, root)
				want := root + "\n" + root + "/bin/python\nTrue\nunset\n"
				if out != want {
					t.Errorf("%s: activate printed %q, want %q", sh.name, out, want)
				}
			}
		})
	}
	t.Run("dash", func(t *testing.T) {
		testenv.Command(t, "dash", "dash")
		out, err := runErr(tmp, "dash", "-c", `. "$1/bin/activate"`, "dash", gen)
		if err == nil || !strings.Contains(out, "bash, zsh or ksh") {
			t.Errorf("dash: %v %q, want a clear refusal", err, out)
		}
	})
	t.Run("fish", func(t *testing.T) {
		testenv.Command(t, "fish", "fish")
		out := run(t, tmp, "fish", "-c", "source "+gen+"/bin/activate.fish; echo $VIRTUAL_ENV; command -v python; deactivate; set -q VIRTUAL_ENV; or echo unset")
		if want := gen + "\n" + gen + "/bin/python\nunset\n"; out != want {
			t.Errorf("fish: %q, want %q", out, want)
		}
	})
	t.Run("tcsh", func(t *testing.T) {
		testenv.Command(t, "tcsh", "tcsh")
		// One command per line: csh expands aliases a line at a time.
		script := filepath.Join(tmp, "t.csh")
		os.WriteFile(script, []byte("source "+gen+"/bin/activate.csh "+gen+"\necho $VIRTUAL_ENV\nwhich python\ndeactivate\necho $?VIRTUAL_ENV\n"), 0o644)
		out := run(t, tmp, "tcsh", "-f", script)
		if want := gen + "\n" + gen + "/bin/python\n0\n"; out != want {
			t.Errorf("tcsh: %q, want %q", out, want)
		}
		// Without the argument a non-interactive csh cannot know; it says so.
		if out, err := runErr(tmp, "tcsh", "-c", "source "+gen+"/bin/activate.csh"); err == nil || !strings.Contains(out, "activate.csh <env>") {
			t.Errorf("tcsh without the environment: %v %q", err, out)
		}
	})
	cfg, _ := os.ReadFile(filepath.Join(gen, "pyvenv.cfg"))
	for _, want := range []string{"home = " + filepath.Dir(info.BaseExecutable) + "\n", "include-system-site-packages = false\n", "version = " + info.Version + "\n", "implementation = CPython\n"} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("pyvenv.cfg lacks %q:\n%s", want, cfg)
		}
	}
	if info.Lib64 {
		if l, err := os.Readlink(filepath.Join(gen, "lib64")); err != nil || l != "lib" {
			t.Errorf("lib64 -> %q, %v", l, err)
		}
	}
}

// TestSecondGenerationSharesStore: a second generation that changes one
// wheel unpacks only that wheel; unchanged files are the same inodes in
// both generations, and the first generation is untouched.
func TestSecondGenerationSharesStore(t *testing.T) {
	info := python(t)
	tmp := t.TempDir()
	a := specWheel(t, tmp, wheeltest.Spec{Name: "stable", Version: "1.0", Files: []wheeltest.File{{Name: "stable.py", Data: []byte("S = 1\n")}}})
	b1 := specWheel(t, tmp, wheeltest.Spec{Name: "moving", Version: "1.0", Files: []wheeltest.File{{Name: "moving.py", Data: []byte("M = 1\n")}}})
	b2 := specWheel(t, tmp, wheeltest.Spec{Name: "moving", Version: "2.0", Files: []wheeltest.File{{Name: "moving.py", Data: []byte("M = 2\n")}}})
	volume := filepath.Join(tmp, "vol")
	g1 := install(t, info, volume, "g1", []wheelFile{a, b1}, venv.Hardlink)
	g2 := install(t, info, volume, "g2", []wheelFile{a, b2}, venv.Hardlink)
	ents, _ := os.ReadDir(venv.StoreDir(volume))
	if len(ents) != 3 {
		t.Fatalf("store holds %d entries, want 3", len(ents))
	}
	sp := filepath.Join("lib", "python"+info.PyVersion(), "site-packages")
	var s1, s2 syscall.Stat_t
	syscall.Stat(filepath.Join(g1, sp, "stable.py"), &s1)
	syscall.Stat(filepath.Join(g2, sp, "stable.py"), &s2)
	if s1.Ino != s2.Ino {
		t.Error("stable.py is not shared between generations")
	}
	for g, want := range map[string]string{g1: "1", g2: "2"} {
		if out := run(t, "", filepath.Join(g, "bin", "python"), "-c", "import moving; print(moving.M)"); strings.TrimSpace(out) != want {
			t.Errorf("%s: moving.M = %q, want %s", filepath.Base(g), out, want)
		}
	}
}

// TestBigDirectoryAndCrossDeviceCopy puts a directory of 1,300 modules
// (more than one link batch) and a namespace package two wheels share into
// a generation twice: once beside its store, hard linked, and once on
// another filesystem (tmpfs), where every link is refused with EXDEV and
// each file must be copied instead, keeping its mtime so the store's
// bytecode stays valid.
func TestBigDirectoryAndCrossDeviceCopy(t *testing.T) {
	info := python(t)
	tmp := t.TempDir()
	var files []wheeltest.File
	for i := range 1300 {
		files = append(files, wheeltest.File{Name: fmt.Sprintf("big/m%04d.py", i), Data: []byte(fmt.Sprintf("V = %d\n", i))})
	}
	files = append(files, wheeltest.File{Name: "big/__init__.py", Data: []byte("")})
	big := specWheel(t, tmp, wheeltest.Spec{Name: "big", Version: "1.0", Files: append(files, wheeltest.File{Name: "ns/a/__init__.py", Data: []byte("A = 1\n")})})
	other := specWheel(t, tmp, wheeltest.Spec{Name: "other", Version: "1.0", Files: []wheeltest.File{{Name: "ns/b/__init__.py", Data: []byte("B = 2\n")}}})

	volume := filepath.Join(tmp, "vol")
	st := &wheel.Store{Dir: venv.StoreDir(volume), Compiler: &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag, Workers: 2}}
	ents, err := st.Unpack(context.Background(), wheel.Source{Path: big.path, Filename: big.filename, SHA256: big.sha},
		wheel.Source{Path: other.path, Filename: other.filename, SHA256: other.sha})
	if err != nil {
		t.Fatal(err)
	}
	pkgs := []venv.Package{{Entry: ents[0], Requested: true}, {Entry: ents[1]}}
	check := func(gen string, wantLinks bool) {
		t.Helper()
		out := run(t, "", filepath.Join(gen, "bin", "python"), "-c",
			"import big.m0000, big.m1299, ns.a, ns.b; print(big.m1299.V + ns.a.A + ns.b.B)")
		if strings.TrimSpace(out) != "1302" {
			t.Fatalf("%s: import printed %q", gen, out)
		}
		sp := filepath.Join(gen, "lib", "python"+info.PyVersion(), "site-packages")
		mods, _ := filepath.Glob(filepath.Join(sp, "big", "m*.py"))
		pycs, _ := filepath.Glob(filepath.Join(sp, "big", "__pycache__", "m*.pyc"))
		if len(mods) != 1300 || len(pycs) != 1300 {
			t.Fatalf("%s: %d modules and %d bytecode files in big/, want 1300 each", gen, len(mods), len(pycs))
		}
		var s syscall.Stat_t
		syscall.Stat(filepath.Join(sp, "big", "m0777.py"), &s)
		if linked := s.Nlink > 1; linked != wantLinks {
			t.Errorf("%s: m0777.py has %d links", gen, s.Nlink)
		}
		before := fileSet(t, gen)
		run(t, "", filepath.Join(gen, "bin", "python"), "-c", "import big.m0001, big.m1298")
		if a, b := diff(before, fileSet(t, gen)); len(a)+len(b) > 0 {
			t.Errorf("%s: importing rewrote bytecode: %v %v", gen, a, b)
		}
	}
	b := &venv.Builder{Python: info, Creator: "volboot test"}
	linked := venv.EnvDir(volume, "linked")
	m, err := b.Build(context.Background(), linked, pkgs)
	if err != nil {
		t.Fatal(err)
	}
	if m.Copied != 0 {
		t.Errorf("beside its store, %d files were copied", m.Copied)
	}
	check(linked, true)

	shm := "/dev/shm"
	var a, c syscall.Stat_t
	if syscall.Stat(shm, &a) != nil || syscall.Stat(tmp, &c) != nil || a.Dev == c.Dev {
		t.Skip("no /dev/shm on another filesystem than the test's temporary directory")
	}
	far, err := os.MkdirTemp(shm, "volboot-test-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(far) })
	m, err = b.Build(context.Background(), filepath.Join(far, "gen"), pkgs)
	if err != nil {
		t.Fatal(err)
	}
	if m.Copied < 2600 {
		t.Errorf("across filesystems only %d files were copied", m.Copied)
	}
	check(filepath.Join(far, "gen"), false)
}

// A store file gone missing (a damaged volume) fails the build with an
// error naming the wheel and the file, however far the plan had got, and
// leaves no generation behind.
func TestMissingStoreFileNamesIt(t *testing.T) {
	info := python(t)
	tmp := t.TempDir()
	// Many small wheels, the damaged one first: its batch fails while the
	// plan is still handing out the others.
	var ws []wheelFile
	for i := range 40 {
		var files []wheeltest.File
		for j := range 5 {
			files = append(files, wheeltest.File{Name: fmt.Sprintf("pkg%02d/m%d.py", i, j), Data: []byte("X = 1\n")})
		}
		ws = append(ws, specWheel(t, tmp, wheeltest.Spec{Name: fmt.Sprintf("w%02d", i), Version: "1.0", Files: files}))
	}
	volume := filepath.Join(tmp, "vol")
	st := &wheel.Store{Dir: venv.StoreDir(volume)}
	var srcs []wheel.Source
	for _, w := range ws {
		srcs = append(srcs, wheel.Source{Path: w.path, Filename: w.filename, SHA256: w.sha})
	}
	ents, err := st.Unpack(context.Background(), srcs...)
	if err != nil {
		t.Fatal(err)
	}
	victim := ents[0]
	if err := os.Remove(filepath.Join(victim.Dir, "pkg00", "m3.py")); err != nil {
		t.Fatal(err)
	}
	var pkgs []venv.Package
	for _, e := range ents {
		pkgs = append(pkgs, venv.Package{Entry: e})
	}
	dir := venv.EnvDir(volume, "g")
	_, err = (&venv.Builder{Python: info, Jobs: 2}).Build(context.Background(), dir, pkgs)
	if err == nil || !strings.Contains(err.Error(), victim.Filename) || !strings.Contains(err.Error(), "pkg00/m3.py") {
		t.Fatalf("err = %v, want it to name %s and pkg00/m3.py", err, victim.Filename)
	}
	if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 0 {
		t.Errorf("left in envs/: %v", ents)
	}
}
