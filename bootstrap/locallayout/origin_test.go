package locallayout_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/locallayout"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
	"github.com/volboot/volboot/integration/testenv"
)

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestOriginRPATHThroughFileLinks is venv's TestTorchNvidiaLayout in the
// local layout with every shared library left on the volume (threshold
// 1): an extension reaches a library of another wheel through an RPATH
// climbing out of its own package ($ORIGIN/../../fakens/fakecublas/lib,
// as torch reaches nvidia/cublas/lib). Both .so files are links from the
// local tree into the store, where the two wheels are in different
// entries; the dynamic loader takes $ORIGIN from the path it opened, in
// the local tree, whose directories are real, so the climb stays there.
func TestOriginRPATHThroughFileLinks(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3 on PATH")
	}
	testenv.Command(t, "gcc", "gcc")
	info, err := interp.Probe(context.Background(), "python3", interp.Cache{Dir: t.TempDir(), Write: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(info.Include, "Python.h")); err != nil {
		testenv.Missing(t, "no Python headers at %s (python3-dev, which .ci/run installs)", info.Include)
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
	specs := []wheeltest.Spec{
		{Name: "fakens-cublas", Version: "12.8.4.1", Tag: "py3-none-manylinux_2_17_" + info.Machine, Platlib: true,
			Files: []wheeltest.File{
				{Name: "fakens/__init__.py"},
				{Name: "fakens/fakecublas/__init__.py"},
				{Name: "fakens/fakecublas/lib/__init__.py"},
				{Name: "fakens/fakecublas/lib/libfakecublas.so", Data: libData, Mode: 0o755},
			}},
		{Name: "faketorch", Version: "2.8.0", Tag: tag, Platlib: true,
			Files: []wheeltest.File{
				{Name: "faketorch/__init__.py", Data: []byte("from faketorch.lib._C import gemm\n")},
				{Name: "faketorch/lib/__init__.py"},
				{Name: "faketorch/lib/_C" + info.ExtSuffix, Data: extData, Mode: 0o755},
			}},
	}
	volume := filepath.Join(tmp, "vol")
	st := &wheel.Store{Dir: venv.StoreDir(volume), Compiler: &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag, Workers: 2}}
	var wheels []venv.Wheel
	for _, s := range specs {
		p, sha, err := wheeltest.Write(tmp, s)
		if err != nil {
			t.Fatal(err)
		}
		wheels = append(wheels, venv.Wheel{Source: wheel.Source{Path: p, Filename: s.Filename(), SHA256: sha}, Requested: true})
	}
	b := &venv.Builder{Python: info, Creator: "volboot"}
	if _, err := venv.Install(context.Background(), st, b, venv.EnvDir(volume, "gen"), wheels); err != nil {
		t.Fatal(err)
	}
	var pkgs []venv.Package
	for _, w := range wheels {
		e, err := st.Open(w.Source.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, venv.Package{Entry: e, Requested: true})
	}
	files, err := b.Files(pkgs)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := locallayout.BuildPack(context.Background(), locallayout.PackOptions{
		Volume: volume, Dir: filepath.Join(volume, ".volboot", "packs"), Generation: "gen",
		Skeleton: func(dir string) error { _, err := venv.WriteSkeleton(dir, info, "", "volboot"); return err },
		Files:    files, Scripts: "bin", Threshold: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Links != 2 {
		t.Fatalf("pack leaves %d files on the volume, want the two .so files", rec.Links)
	}
	res, err := locallayout.Materialize(context.Background(), locallayout.Options{
		LocalDir: filepath.Join(tmp, "local"), Volume: volume, Generation: "gen",
		PackPath: filepath.Join(volume, ".volboot", "packs", locallayout.PackName("gen", rec.SHA256)), Pack: *rec,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Lease.Close()
	extLink := filepath.Join(res.Dir, "lib", "python"+info.PyVersion(), "site-packages", "faketorch", "lib", "_C"+info.ExtSuffix)
	if target, err := os.Readlink(extLink); err != nil || !strings.HasPrefix(target, filepath.Join(volume, ".volboot", "store")) {
		t.Fatalf("the extension is not a link into the store: %q %v", target, err)
	}
	out := run(t, "", filepath.Join(res.Dir, "bin", "python"), "-c", "import faketorch; print(faketorch.gemm(6, 7), faketorch.__file__)")
	want := "49 " + filepath.Join(res.Dir, "lib", "python"+info.PyVersion(), "site-packages", "faketorch", "__init__.py")
	if strings.TrimSpace(out) != want {
		t.Fatalf("the extension in the local tree printed %q, want %q", out, want)
	}
}
