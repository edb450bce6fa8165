package venv_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// synthCorpus writes wheels exercising what pip handles: a namespace
// package split over two wheels, every .data category, console and GUI
// entry points, a .pth file adding a directory, a non-purelib root, and
// many files.
func synthCorpus(t *testing.T, dir string) []wheelFile {
	core := wheeltest.Spec{
		Name: "synth-core", Version: "1.0",
		Files: []wheeltest.File{
			{Name: "synthns/core/__init__.py", Data: []byte("VALUE = 'core'\n")},
			{Name: "synthns/core/cli.py", Data: []byte("import sys\ndef main():\n    print('synth-cli ran', sys.argv[1:])\n    return 0\ndef gui():\n    print('synth-gui ran')\n")},
			{Name: "synth_core.pth", Data: []byte("synth_extra\n")},
			{Name: "synth_extra/extramod.py", Data: []byte("EXTRA = 42\n")},
			{Name: "synth_core-1.0.data/purelib/synth_pure.py", Data: []byte("PURE = True\n")},
			{Name: "synth_core-1.0.data/platlib/synth_plat.py", Data: []byte("PLAT = True\n")},
			{Name: "synth_core-1.0.data/scripts/synth-tool", Data: []byte("#!python\nimport synthns.core\nprint('synth-tool', synthns.core.VALUE)\n")},
			{Name: "synth_core-1.0.data/scripts/synth-sh", Data: []byte("#!/bin/sh\necho synth-sh ran\n")},
			{Name: "synth_core-1.0.data/headers/synth.h", Data: []byte("#define SYNTH 1\n")},
			{Name: "synth_core-1.0.data/data/share/synth/data.txt", Data: []byte("shared data\n")},
		},
		EntryPoints: "[console_scripts]\nsynth-cli = synthns.core.cli:main\n\n[gui_scripts]\nsynth-gui = synthns.core.cli:gui\n",
	}
	for i := 0; i < 400; i++ {
		core.Files = append(core.Files, wheeltest.File{
			Name: fmt.Sprintf("synthns/core/gen/g%02d/m%03d.py", i%20, i),
			Data: []byte(fmt.Sprintf("N = %d\ndef f(x):\n    return x + N\n", i)),
		})
	}
	for i := 0; i < 20; i++ {
		core.Files = append(core.Files, wheeltest.File{Name: fmt.Sprintf("synthns/core/gen/g%02d/__init__.py", i), Data: nil})
	}
	core.Files = append(core.Files, wheeltest.File{Name: "synthns/core/gen/__init__.py"})
	plugin := wheeltest.Spec{
		Name: "synth-plugin", Version: "2.0", Platlib: true,
		Files: []wheeltest.File{
			{Name: "synthns/plugin/__init__.py", Data: []byte("from synthns.core import VALUE\nNAME = 'plugin+' + VALUE\n")},
			{Name: "synthns/plugin/data/table.csv", Data: []byte("a,b\n1,2\n")},
		},
	}
	return []wheelFile{specWheel(t, dir, core), specWheel(t, dir, plugin)}
}

func ensurepipWheels(t *testing.T, info *interp.Info) (pip, setuptools string) {
	out, err := exec.Command(info.Executable, "-I", "-c", "import ensurepip,os;print(os.path.dirname(ensurepip.__file__))").Output()
	if err != nil {
		t.Skipf("this python has no ensurepip: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "_bundled")
	for _, pat := range []string{"pip-*.whl", "setuptools-*.whl"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		if len(m) != 1 {
			t.Skipf("ensurepip's bundled %s is not in %s", pat, dir)
		}
		if pat[0] == 'p' {
			pip = m[0]
		} else {
			setuptools = m[0]
		}
	}
	return pip, setuptools
}

func debianWheels(t *testing.T) []string {
	var out []string
	for _, pat := range []string{"pip-*.whl", "setuptools-*.whl", "wheel-*.whl"} {
		m, _ := filepath.Glob(filepath.Join("/usr/share/python-wheels", pat))
		if len(m) != 1 {
			t.Skipf("Debian's %s is not in /usr/share/python-wheels (apt-get install python3-pip-whl python3-setuptools-whl python3-wheel-whl)", pat)
		}
		out = append(out, m[0])
	}
	return out
}

// TestPipOracleEnsurepipAndSynthetic installs ensurepip's pip and
// setuptools and the synthetic corpus with volboot and with pip, and
// compares what Python and pip see.
func TestPipOracleEnsurepipAndSynthetic(t *testing.T) {
	info := python(t)
	pipW, stW := ensurepipWheels(t, info)
	tmp := t.TempDir()
	ws := append([]wheelFile{fileWheel(t, pipW), fileWheel(t, stW)}, synthCorpus(t, tmp)...)

	volume := filepath.Join(tmp, "vol")
	start := time.Now()
	gen := install(t, info, volume, "gen-a", ws, venv.Hardlink)
	t.Logf("volboot install: %v", time.Since(start))
	start = time.Now()
	oracle := filepath.Join(tmp, "oracle")
	pipInstall(t, info, oracle, pipW, ws)
	t.Logf("pip install: %v", time.Since(start))
	start = time.Now()
	defer func() { t.Logf("checks: %v", time.Since(start)) }()

	compareWithOracle(t, info, gen, oracle, pipW)

	// Rule 4: nothing in the generation names the volume.
	assertNoPath(t, gen, volume)
	before := fileSet(t, gen)

	// Console scripts, .data scripts, .pth, namespace packages, data files.
	py := filepath.Join(gen, "bin", "python")
	checks := func(gen string) {
		t.Helper()
		if out := run(t, "", filepath.Join(gen, "bin", "pip"), "--version"); !strings.Contains(out, filepath.Join(gen, "lib")) {
			t.Errorf("bin/pip --version = %q, want it to run from %s", out, gen)
		}
		if out := run(t, "", filepath.Join(gen, "bin", "synth-cli"), "a", "b"); !strings.Contains(out, "synth-cli ran ['a', 'b']") {
			t.Errorf("synth-cli printed %q", out)
		}
		if out := run(t, "", filepath.Join(gen, "bin", "synth-gui")); !strings.Contains(out, "synth-gui ran") {
			t.Errorf("synth-gui printed %q", out)
		}
		if out := run(t, "", filepath.Join(gen, "bin", "synth-tool")); !strings.Contains(out, "synth-tool core") {
			t.Errorf("synth-tool printed %q", out)
		}
		if out := run(t, "", filepath.Join(gen, "bin", "synth-sh")); !strings.Contains(out, "synth-sh ran") {
			t.Errorf("synth-sh printed %q", out)
		}
		out := run(t, "", filepath.Join(gen, "bin", "python"), "-c",
			"import warnings; warnings.simplefilter('ignore'); print(); import sys, extramod, synth_pure, synth_plat, synthns.plugin, synthns.core.gen.g07.m127 as m, setuptools, pip;"+
				"print(sys.prefix, extramod.EXTRA, synthns.plugin.NAME, m.f(1), synthns.__path__._path if hasattr(synthns.__path__, '_path') else list(synthns.__path__))")
		if !strings.Contains(out, " 42 plugin+core 128") || !strings.Contains(out, "\n"+gen+" ") {
			t.Errorf("imports printed %q", out)
		}
		if b, err := os.ReadFile(filepath.Join(gen, "share", "synth", "data.txt")); err != nil || string(b) != "shared data\n" {
			t.Errorf(".data/data file: %q %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(gen, "include", "site", "python"+info.PyVersion(), "synth-core", "synth.h")); err != nil {
			t.Errorf(".data/headers: %v", err)
		}
	}
	checks(gen)
	out := run(t, "", py, "-m", "pip", "show", "-f", "synth-core")
	if !strings.Contains(out, "Name: synth-core") || !strings.Contains(out, "synthns/core/cli.py") || !strings.Contains(out, "../../../bin/synth-cli") {
		t.Errorf("pip show -f:\n%s", out)
	}
	if out := run(t, "", py, "-m", "pip", "show", "pip"); !strings.Contains(out, "Version: 23") {
		t.Errorf("pip show pip:\n%s", out)
	}
	// The store's bytecode is valid where it is linked: running all of
	// the above wrote no new .pyc into the generation.
	if a, b := diff(before, fileSet(t, gen)); len(a)+len(b) > 0 {
		t.Errorf("running the generation changed it: removed %v, added %s", a, short(b))
	}

	// Relocation: the same volume mounted elsewhere keeps working.
	moved := filepath.Join(tmp, "moved-volume")
	if err := os.Rename(volume, moved); err != nil {
		t.Fatal(err)
	}
	checks(filepath.Join(moved, ".volboot", "envs", "gen-a"))
}

// TestPipOracleDebianWheels does the same for Debian's pip, setuptools and
// wheel, and runs bin/wheel.
func TestPipOracleDebianWheels(t *testing.T) {
	info := python(t)
	deb := debianWheels(t)
	tmp := t.TempDir()
	var ws []wheelFile
	for _, p := range deb {
		ws = append(ws, fileWheel(t, p))
	}
	gen := install(t, info, filepath.Join(tmp, "vol"), "gen-deb", ws, venv.Hardlink)
	oracle := filepath.Join(tmp, "oracle")
	pipInstall(t, info, oracle, deb[0], ws)
	compareWithOracle(t, info, gen, oracle, deb[0])
	if out := run(t, "", filepath.Join(gen, "bin", "wheel"), "version"); !strings.Contains(out, "wheel 0.") {
		t.Errorf("bin/wheel version = %q", out)
	}
	if out := run(t, "", filepath.Join(gen, "bin", "pip3"), "--version"); !strings.Contains(out, "pip 23") {
		t.Errorf("bin/pip3 --version = %q", out)
	}
}

// compareWithOracle compares a volboot generation with a pip-installed
// venv: files, scripts, RECORD contents, importable top-level modules,
// pip list and pip check.
func compareWithOracle(t *testing.T, info *interp.Info, gen, oracle, pipWheel string) {
	t.Helper()
	ours, theirs := fileSet(t, gen), fileSet(t, oracle)
	if a, b := diff(ours, theirs); len(a)+len(b) > 0 {
		t.Errorf("file sets differ:\n only volboot: %s\n only pip: %s", short(a), short(b))
	}
	// Every RECORD lists the same paths as pip's.
	records, _ := filepath.Glob(filepath.Join(gen, "lib", "python*", "site-packages", "*.dist-info", "RECORD"))
	if len(records) == 0 {
		t.Fatal("no RECORD files in the generation")
	}
	for _, r := range records {
		rel, _ := filepath.Rel(gen, r)
		a, b := recordPaths(t, r), recordPaths(t, filepath.Join(oracle, rel))
		if x, y := diff(a, b); len(x)+len(y) > 0 {
			t.Errorf("%s differs from pip's:\n only volboot: %s\n only pip: %s", rel, short(x), short(y))
		}
		inst, _ := os.ReadFile(filepath.Join(filepath.Dir(r), "INSTALLER"))
		if string(inst) != "volboot\n" {
			t.Errorf("%s/INSTALLER = %q", filepath.Dir(rel), inst)
		}
	}
	const listMods = "import pkgutil, sys, json; sp = [p for p in sys.path if p.endswith('site-packages')];" +
		"print(json.dumps(sorted(m.name for m in pkgutil.iter_modules(sp))))"
	ourMods := run(t, "", filepath.Join(gen, "bin", "python"), "-c", listMods)
	theirMods := run(t, "", filepath.Join(oracle, "bin", "python"), "-c", listMods)
	if ourMods != theirMods || len(ourMods) < 10 {
		t.Errorf("importable top-level modules differ:\n volboot %s\n pip     %s", ourMods, theirMods)
	}
	pipRun := func(env string, args ...string) string {
		return run(t, "", filepath.Join(env, "bin", "python"), append([]string{filepath.Join(pipWheel, "pip")}, args...)...)
	}
	var ourList, theirList []map[string]string
	json.Unmarshal([]byte(pipRun(gen, "list", "--format", "json")), &ourList)
	json.Unmarshal([]byte(pipRun(oracle, "list", "--format", "json")), &theirList)
	if fmt.Sprint(ourList) != fmt.Sprint(theirList) || len(ourList) == 0 {
		t.Errorf("pip list differs:\n volboot %v\n pip     %v", ourList, theirList)
	}
	if a, b := pipRun(gen, "check"), pipRun(oracle, "check"); a != b {
		t.Errorf("pip check differs:\n volboot %q\n pip     %q", a, b)
	}
	if a, b := pipRun(gen, "list", "--not-required", "--format", "freeze"), pipRun(oracle, "list", "--not-required", "--format", "freeze"); a != b {
		t.Errorf("pip list --not-required differs:\n volboot %q\n pip     %q", a, b)
	}
}

func recordPaths(t *testing.T, p string) []string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Split(line, ",")
		if strings.HasSuffix(f[0], "direct_url.json") {
			continue
		}
		out = append(out, f[0])
	}
	sort.Strings(out)
	return out
}

// assertNoPath fails if any file or link under root contains path.
func assertNoPath(t *testing.T, root, path string) {
	t.Helper()
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			if target, _ := os.Readlink(p); strings.Contains(target, path) {
				t.Errorf("link %s -> %s names the volume", p, target)
			}
			return nil
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), path) {
			t.Errorf("%s contains the volume path %s", p, path)
		}
		return nil
	})
}
