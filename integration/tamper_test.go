package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/bench/sync/synthstack"
)

// TestTamperedGeneration damages a generation's own tree the ways people
// and stray tools do, over a sound store: status --verify must find each
// (naming the package, or the file for the interpreter link), repair must
// rebuild the generation from the store, and the packages then import.
func TestTamperedGeneration(t *testing.T) {
	f := newFixture(t, fastDir(t))
	ws := f.add(synthstack.Small("tamp", 3, 12)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	id := f.sync()
	gen := filepath.Join(f.vol, ".volboot", "envs", id)
	sps, _ := filepath.Glob(filepath.Join(gen, "lib", "python*", "site-packages"))
	if len(sps) != 1 {
		t.Fatalf("site-packages in %s: %v", gen, sps)
	}
	sp := sps[0]
	module := func(i int) string { return filepath.Join(sp, ws[i].Spec.Module()) }
	for _, c := range []struct {
		name    string
		pkg     string // the package the drift must name ("" for the venv's own files)
		tamper  func() error
		symptom string // in the drift's detail
	}{
		{"file deleted", ws[1].Spec.Name, func() error { return os.Remove(filepath.Join(module(1), "__init__.py")) }, "missing"},
		{"package directory deleted", ws[2].Spec.Name, func() error { return os.RemoveAll(module(2)) }, "missing"},
		{"file replaced, same size", ws[1].Spec.Name, func() error {
			p := filepath.Join(module(1), "sub000", "m00000.py")
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.WriteFile(p, []byte(strings.Repeat("#", len(b))), 0o644)
		}, "sha256 differs"},
		{"file replaced by a directory", ws[2].Spec.Name, func() error {
			p := filepath.Join(module(2), "__init__.py")
			if err := os.Remove(p); err != nil {
				return err
			}
			return os.Mkdir(p, 0o755)
		}, "directory"},
		{"console script deleted", ws[0].Spec.Name, func() error { return os.Remove(filepath.Join(gen, "bin", ws[0].Spec.Name)) }, "missing"},
		{"interpreter link deleted", "", func() error { return os.Remove(filepath.Join(gen, "bin", "python")) }, "bin/python"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "-"), func(t *testing.T) {
			if err := c.tamper(); err != nil {
				t.Fatal(err)
			}
			st, r := f.status("--verify")
			found := false
			for _, d := range st.Drift {
				if d.Kind == "generation-file" && d.Package == c.pkg && strings.Contains(d.Detail, c.symptom) {
					found = true
				}
			}
			if st.InSync || !found {
				t.Fatalf("status --verify after %s: want a generation-file drift naming %q with %q\n%s", c.name, c.pkg, c.symptom, r.stdout)
			}
			if r := f.run("repair"); r.code != 0 {
				t.Fatalf("repair after %s: exit %d\n%s%s", c.name, r.code, r.stdout, r.stderr)
			}
			st, r = f.status("--verify")
			if !st.InSync || len(st.Drift) != 0 || *st.Generation != id {
				t.Fatalf("status --verify after repairing %s:\n%s%s", c.name, r.stdout, r.stderr)
			}
			var mods []string
			for _, w := range ws {
				mods = append(mods, w.Spec.Module()+".sub000.m00000")
			}
			if out, err := exec.Command(filepath.Join(gen, "bin", "python"), "-c", "import "+strings.Join(mods, ", ")).CombinedOutput(); err != nil {
				t.Fatalf("import after repairing %s: %v\n%s", c.name, err, out)
			}
			if out, err := exec.Command(filepath.Join(gen, "bin", ws[0].Spec.Name)).CombinedOutput(); err != nil {
				t.Fatalf("console script after repairing %s: %v\n%s", c.name, err, out)
			}
		})
	}
}
