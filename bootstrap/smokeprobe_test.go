package bootstrap

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSmokeProbe runs the smoke child (smokeprobe.py) with the machine's
// python3 on modules of a real venv: what it records, what it leaves out,
// and that nothing of its own fails an import.
func TestSmokeProbe(t *testing.T) {
	real, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 on PATH")
	}
	dir := t.TempDir()
	if out, err := exec.Command(real, "-m", "venv", "--without-pip", dir).CombinedOutput(); err != nil {
		t.Skipf("python3 -m venv: %v\n%s", err, out)
	}
	python := filepath.Join(dir, "bin", "python")
	sites, _ := filepath.Glob(filepath.Join(dir, "lib", "python3*", "site-packages"))
	if len(sites) != 1 {
		t.Fatalf("site-packages: %q", sites)
	}
	site := sites[0]
	modules := map[string]string{
		"lister/__init__.py": "import os, importlib.metadata as md\nFILES = os.listdir(os.path.dirname(__file__))\n" +
			"ALL = list(md.distributions())\ntry:\n    md.version('not-there')\nexcept md.PackageNotFoundError:\n    pass\n" +
			"try:\n    import optional_thing\nexcept ImportError:\n    pass\nimport helper\n",
		"helper.py":      "X = 1\n",
		"spawner.py":     "import subprocess\nsubprocess.run(['true'], check=True)\n",
		"breaks_json.py": "import sys\nsys.modules['json'] = None\n",
		"unfinder.py":    "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if 'Volboot' not in getattr(f, '__name__', '')]\n",
		"fails.py":       "raise ImportError('built for another ABI')\n",
		"exits.py":       "raise SystemExit('tampered')\n",
	}
	for name, src := range modules {
		p := filepath.Join(site, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(module string) (*smokeReport, string) {
		t.Helper()
		data, reason, _ := importOne(context.Background(), python, module, time.Minute)
		if reason != "" {
			return nil, reason
		}
		if len(data) == 0 {
			return nil, ""
		}
		r, err := parseSmokeReport(data)
		if err != nil {
			t.Fatalf("%s: %v\n%s", module, err, data)
		}
		return r, ""
	}

	r, reason := run("lister")
	if r == nil {
		t.Fatalf("lister: no report (%s)", reason)
	}
	if !slices.Contains(r.Listed, filepath.Join(site, "lister")) || slices.Contains(r.Listed, site) {
		t.Errorf("listed %q: want lister's own directory and not site-packages (importlib.metadata's lookup)", r.Listed)
	}
	if !slices.Contains(r.Missed, "optional_thing") {
		t.Errorf("missed %q: want optional_thing", r.Missed)
	}
	if !slices.Contains(r.Dists, "*") || !slices.Contains(r.Dists, "not-there") {
		t.Errorf("distributions asked for %q: want * and not-there", r.Dists)
	}
	found := false
	for _, m := range r.mods {
		found = found || m.name == "helper" && m.file == filepath.Join(site, "helper.py")
	}
	if !found {
		t.Errorf("helper is not among the modules: %+v", r.mods)
	}
	if len(r.Blind) != 0 {
		t.Errorf("blind %q", r.Blind)
	}

	if r, _ := run("spawner"); r == nil || len(r.Blind) == 0 || !strings.Contains(r.Blind[0], "subprocess.Popen") {
		t.Errorf("spawner: %+v, want blind to a process", r)
	}
	if r, _ := run("unfinder"); r == nil || len(r.Blind) == 0 || !strings.Contains(r.Blind[0], "sys.meta_path") {
		t.Errorf("unfinder: %+v, want blind to lost misses", r)
	}
	if r, reason := run("breaks_json"); r != nil || reason != "" {
		t.Errorf("breaks_json: report %v, reason %q: want a pass without a report", r, reason)
	}
	if _, reason := run("fails"); !strings.Contains(reason, "ImportError: built for another ABI") {
		t.Errorf("fails: %q", reason)
	}
	if _, reason := run("exits"); !strings.HasSuffix(reason, ": tampered") {
		t.Errorf("exits: %q, want the message as python -c 'import exits' ends", reason)
	}
}
