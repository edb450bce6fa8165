package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/integration/fakehub"
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

// TestTamperedModelBlob: a model blob is named by its content's sha256. A
// truncated one is found by plain status (its size), one with 8 bytes
// overwritten by status --verify (its content); repair fetches each again.
func TestTamperedModelBlob(t *testing.T) {
	f := newFixture(t, fastDir(t))
	ws := f.add(synthstack.Small("mblob", 1, 3)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	hub := fakehub.New(fakehub.Options{})
	cdn := serveOn(t, "127.0.0.1", hub.CDN())
	hub.SetCDNURL(cdn.URL)
	content := bytes.Repeat([]byte("weights!"), 4096)
	if _, err := hub.Commit("model", "volboot/voice", map[string]fakehub.File{
		"model.safetensors": {Content: fakehub.Bytes(content), LFS: true},
	}, "main"); err != nil {
		t.Fatal(err)
	}
	hubSrv := serveOn(t, "127.0.0.1", hub)
	m, err := os.OpenFile(f.manifest(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(m, "\n[[model]]\nrepo = \"volboot/voice\"\nrevision = \"main\"\nfiles = [\"model.safetensors\"]\ngroup = \"core\"\n")
	m.Close()
	f.env = append(f.env, "HF_ENDPOINT="+hubSrv.URL)
	f.sync()
	sum := sha256.Sum256(content)
	blob := filepath.Join(f.vol, "models", "hub", "models--volboot--voice", "blobs", hex.EncodeToString(sum[:]))
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("the model's blob: %v", err)
	}
	modelDrift := func(st *statusJSON) bool {
		for _, d := range st.Drift {
			if d.Kind == "model-missing" && d.Package == "volboot/voice" {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		name   string
		tamper func() error
		plain  bool // plain status must see it too
	}{
		{"truncated", func() error { return os.Truncate(blob, int64(len(content)/2)) }, true},
		{"8 bytes overwritten", func() error {
			fh, err := os.OpenFile(blob, os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer fh.Close()
			_, err = fh.WriteAt([]byte("tampered"), 100)
			return err
		}, false},
	} {
		if err := c.tamper(); err != nil {
			t.Fatal(err)
		}
		if st, r := f.status(); c.plain && (st.InSync || !modelDrift(st)) {
			t.Fatalf("plain status after the blob was %s:\n%s", c.name, r.stdout)
		}
		if st, r := f.status("--verify"); st.InSync || !modelDrift(st) {
			t.Fatalf("status --verify after the blob was %s:\n%s", c.name, r.stdout)
		}
		if r := f.run("repair"); r.code != 0 {
			t.Fatalf("repair of a blob %s: exit %d\n%s", c.name, r.code, r.stderr)
		}
		if st, r := f.status("--verify"); !st.InSync || len(st.Drift) != 0 {
			t.Fatalf("status --verify after repairing a blob %s:\n%s%s", c.name, r.stdout, r.stderr)
		}
		if got, err := os.ReadFile(blob); err != nil || !bytes.Equal(got, content) {
			t.Fatalf("the blob after repairing it %s: %d bytes, %v", c.name, len(got), err)
		}
	}
}

// TestRepairUnderLoad: repair mends a generation while a handler runs from
// it, polling its files every 2 ms: the handler never finds one missing
// (the rebuilt generation is swapped in with one atomic exchange).
func TestRepairUnderLoad(t *testing.T) {
	repairUnderLoad(t, newFixture(t, fastDir(t)), 10)
}

// repairUnderLoad runs a handler from f's generation that polls every
// file of it until told to stop, damages the generation twice (a store
// file, then a file of its own tree), repairs it each time, and demands
// that the handler never found a file missing in at least minPolls polls.
func repairUnderLoad(t *testing.T, f *fixture, minPolls int) {
	t.Helper()
	ws := f.add(synthstack.Small("load", 3, 30)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	id := f.sync()
	ctl := t.TempDir()
	ready, stop, report := filepath.Join(ctl, "ready"), filepath.Join(ctl, "stop"), filepath.Join(ctl, "report")
	handler := fmt.Sprintf(`import os, sys, time
paths = []
for root, _, files in os.walk(os.path.join(sys.prefix, "lib")):
    paths += [os.path.join(root, f) for f in files]
open(%[1]q, "w").write(str(len(paths)))
missing, polls = set(), 0
while not os.path.exists(%[2]q):
    for p in paths:
        if not os.path.exists(p):
            missing.add(p)
    polls += 1
    time.sleep(0.002)
open(%[3]q, "w").write("%%d %%d\n%%s" %% (polls, len(missing), "\n".join(sorted(missing))))
`, ready, stop, report)
	// The volume layout: what is under test is a handler polling the
	// generation on the volume while repair mends it.
	run := f.start("run", "--layout", "volume", "--", "python", "-c", handler)
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the handler did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Damage a store file (linked into the generation) in place, so that
	// repair drops its entry, fetches and unpacks it again, and rebuilds.
	victims, _ := filepath.Glob(filepath.Join(f.vol, ".volboot", "envs", id, "lib", "python*", "site-packages", ws[1].Spec.Module(), "__init__.py"))
	if len(victims) != 1 {
		t.Fatalf("no %s in the generation", ws[1].Spec.Module())
	}
	if err := os.WriteFile(victims[0], []byte("raise SystemExit('tampered')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if r := f.run("repair"); r.code != 0 {
			t.Fatalf("repair under load: exit %d\n%s", r.code, r.stderr)
		}
		if i == 0 {
			if st, r := f.status("--verify"); !st.InSync || len(st.Drift) != 0 {
				t.Fatalf("status --verify after repair:\n%s%s", r.stdout, r.stderr)
			}
			// Damage the generation's own tree too, over a sound store.
			if err := os.Remove(victims[0]); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(victims[0], []byte("raise SystemExit('replaced')\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(100 * time.Millisecond)
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run.wait(); r.code != 0 {
		t.Fatalf("the handler: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var polls, missing int
	fmt.Sscanf(string(b), "%d %d", &polls, &missing)
	if missing != 0 || polls < minPolls {
		t.Fatalf("the handler polled %d times and found %d files missing while repair ran:\n%s", polls, missing, b)
	}
	t.Logf("the handler polled its %s files %d times while repair ran twice: none missing", strings.TrimSpace(string(mustRead(t, ready))), polls)
	if st, r := f.status("--verify"); !st.InSync || len(st.Drift) != 0 || *st.Generation != id {
		t.Fatalf("status --verify after the repairs:\n%s%s", r.stdout, r.stderr)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDamagedState: a state.json that does not parse is drift that names
// the file and says to repair, not an error; repair writes it anew.
func TestDamagedState(t *testing.T) {
	f := newFixture(t, fastDir(t))
	ws := f.add(synthstack.Small("dstate", 2, 6)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	id := f.sync()
	state := filepath.Join(f.vol, ".volboot", "state.json")
	if err := os.WriteFile(state, []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, r := f.status()
	if st.InSync || len(st.Drift) != 1 || st.Drift[0].Kind != "state-damaged" ||
		!strings.Contains(st.Drift[0].Detail, state) || !strings.Contains(st.Drift[0].Detail, "volboot repair") {
		t.Fatalf("status of a damaged state.json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := f.run("repair"); r.code != 0 {
		t.Fatalf("repair of a damaged state.json: exit %d\n%s", r.code, r.stderr)
	}
	if st, r := f.status("--verify"); !st.InSync || *st.Generation != id {
		t.Fatalf("status --verify after repair:\n%s%s", r.stdout, r.stderr)
	}
}
