package integration

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bench/sync/synthstack"
)

// TestRelativeVolume: --volume given relative to the working directory
// syncs (the smoke check runs elsewhere), and run hands the handler
// absolute VIRTUAL_ENV, PATH and HF_HOME, so that a handler that changes
// directory still runs its generation's interpreter and packages.
func TestRelativeVolume(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("rel", 2, 6)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	rel, err := filepath.Rel(f.work, f.vol)
	if err != nil || filepath.IsAbs(rel) {
		t.Fatalf("no relative path from %s to %s: %v", f.work, f.vol, err)
	}
	abs := f.vol
	f.vol = rel // f.run runs in f.work
	id := f.sync()
	handler := `import os, shutil, sys
os.chdir("/")
import rel_00, rel_01
print("VIRTUAL_ENV=" + os.environ["VIRTUAL_ENV"])
print("HF_HOME=" + os.environ["HF_HOME"])
print("PATH0=" + os.environ["PATH"].split(os.pathsep)[0])
print("PYTHON=" + shutil.which("python"))
print("PREFIX=" + sys.prefix)
`
	r := f.run("run", "--", "python", "-c", handler)
	if r.code != 0 {
		t.Fatalf("run on a relative volume: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	gen := filepath.Join(abs, ".volboot", "envs", id)
	for _, want := range []string{"VIRTUAL_ENV=" + gen, "PATH0=" + filepath.Join(gen, "bin"), "PYTHON=" + filepath.Join(gen, "bin", "python"), "PREFIX=" + gen} {
		if !strings.Contains(r.stdout, want+"\n") {
			t.Errorf("the handler's environment lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "HF_HOME="+abs+"/") {
		t.Errorf("HF_HOME is not under the absolute volume %s:\n%s", abs, r.stdout)
	}
	st, sr := f.status("--verify")
	if !st.InSync || *st.Generation != id {
		t.Fatalf("status --verify on the relative volume:\n%s%s", sr.stdout, sr.stderr)
	}
}
