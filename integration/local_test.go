package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap"
)

// envFacts is what localFacts's handler reports about its environment.
type envFacts struct {
	Prefix     string            `json:"prefix"`
	VirtualEnv string            `json:"virtual_env"`
	Path       []string          `json:"path"`
	Files      map[string]string `json:"files"`     // module -> __file__
	Blob       string            `json:"blob"`      // a big file's path in the environment
	BlobReal   string            `json:"blob_real"` // and where it really is
	BlobSize   int64             `json:"blob_size"`
	Script     string            `json:"script"` // a console script's output
	PipList    string            `json:"pip_list"`
	PipCheck   string            `json:"pip_check"`
}

// localFacts runs a handler under `volboot run --layout layout` that
// imports mods and reports where everything came from.
func localFacts(t *testing.T, f *fixture, layout string, mods []string, blobMod, script string) (envFacts, result) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "facts.json")
	modList, _ := json.Marshal(mods)
	handler := fmt.Sprintf(`import glob, json, os, subprocess, sys
mods = %s
files = {}
for m in mods:
    files[m] = __import__(m).__file__
blob = sorted(glob.glob(os.path.join(os.path.dirname(__import__(%q).__file__), "lib", "*.so")))[0]
pip = lambda *a: subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *a], capture_output=True, text=True).stdout
json.dump({"prefix": sys.prefix, "virtual_env": os.environ["VIRTUAL_ENV"], "path": sys.path, "files": files,
           "blob": blob, "blob_real": os.path.realpath(blob), "blob_size": len(open(blob, "rb").read()),
           "script": subprocess.run([%q], capture_output=True, text=True).stdout.strip(),
           "pip_list": pip("list", "--format=freeze"), "pip_check": pip("check")}, open(%q, "w"))
`, modList, blobMod, script, out)
	r := f.run("run", "--layout", layout, "--", "python", "-c", handler)
	if r.code != 0 {
		t.Fatalf("volboot run --layout %s: exit %d\n%s%s", layout, r.code, r.stdout, r.stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the handler wrote nothing: %v\n%s", err, r.stderr)
	}
	var fc envFacts
	if err := json.Unmarshal(data, &fc); err != nil {
		t.Fatal(err)
	}
	return fc, r
}

// TestLocalLayout runs one generation in both layouts on local disk and
// holds the local one to the volume one: the same sys.path shape, modules,
// console scripts, pip list and pip check, with its small files on the
// local directory and its big ones links to the volume's store. Then the
// next boot reuses the local tree, status --verify covers it, repair
// mends a damaged one, and a broken one is laid out again.
func TestLocalLayout(t *testing.T) {
	f := newFixture(t, "")
	specs := synthstack.Small("loc", 4, 12)
	specs[1].Blobs, specs[1].BlobSize = 2, 300<<10
	ws := f.add(specs...)
	pip := f.addPip()
	all := append(ws, pip)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(all...)}}, f.entries("core", all...))
	id := f.sync()

	// On local disk, auto runs from the volume: no pack is made...
	var st bootstrap.State
	data, _ := os.ReadFile(filepath.Join(f.vol, ".volboot", "state.json"))
	if err := json.Unmarshal(data, &st); err != nil || st.Generations[id] == nil || st.Generations[id].Pack != nil {
		t.Fatalf("a sync in the volume layout packed the generation: %v\n%s", err, data)
	}
	// ... until a worker that wants the local layout syncs: it misses the
	// fast path and packs the generation under the lock.
	if r := f.run("sync", "--layout", "local"); r.code != 0 || !strings.Contains(r.stderr, "packed generation") {
		t.Fatalf("sync --layout local of a generation without a pack: exit %d\n%s", r.code, r.stderr)
	} else if !strings.Contains(r.stderr, "from store entries' blobs, 0 read one by one") {
		// Every store entry has its blob of small files: the pack opens
		// none of them one by one (DESIGN.md §5.8).
		t.Errorf("the pack read store files one by one:\n%s", r.stderr)
	}
	blobs, _ := filepath.Glob(filepath.Join(f.vol, ".volboot", "store", "*", ".volboot-small.pack"))
	if len(blobs) != len(all) {
		t.Errorf("%d store entries have a blob of small files, want all %d", len(blobs), len(all))
	}
	data, _ = os.ReadFile(filepath.Join(f.vol, ".volboot", "state.json"))
	if err := json.Unmarshal(data, &st); err != nil || st.Generations[id] == nil || st.Generations[id].Pack == nil {
		t.Fatalf("the generation's record names no pack: %v\n%s", err, data)
	}
	pk := st.Generations[id].Pack
	if _, err := os.Stat(filepath.Join(f.vol, ".volboot", "packs", id+"-"+pk.SHA256+".pack")); err != nil {
		t.Fatalf("the pack the record names: %v", err)
	}
	if pk.Links < 2 || pk.Linked < 2*300<<10 {
		t.Errorf("pack: %d links of %d bytes, want at least the two blobs", pk.Links, pk.Linked)
	}

	var mods []string
	for _, w := range all {
		mods = append(mods, w.Spec.Module())
	}
	script := specs[0].Name // Small gives every fourth package a console script
	vf, _ := localFacts(t, f, "volume", mods, specs[1].Module(), script)
	lf, r := localFacts(t, f, "local", mods, specs[1].Module(), script)
	gen := filepath.Join(f.vol, ".volboot", "envs", id)
	tree := filepath.Join(f.local, "envs", id)
	if vf.Prefix != gen || vf.VirtualEnv != gen {
		t.Fatalf("volume layout: prefix %s, VIRTUAL_ENV %s, want %s", vf.Prefix, vf.VirtualEnv, gen)
	}
	if lf.Prefix != tree || lf.VirtualEnv != tree {
		t.Fatalf("local layout: prefix %s, VIRTUAL_ENV %s, want %s\n%s", lf.Prefix, lf.VirtualEnv, tree, r.stderr)
	}
	if !strings.Contains(r.stderr, "layout local: --layout local; local tree laid out from its pack") {
		t.Errorf("run --layout local does not say what it did:\n%s", r.stderr)
	}
	// The same sys.path, prefix for prefix; every module from the local
	// tree; the big file a link to the store, read whole through it.
	if got, want := strings.Join(lf.Path, "\n"), strings.ReplaceAll(strings.Join(vf.Path, "\n"), gen, tree); got != want {
		t.Errorf("sys.path differs between the layouts:\nlocal:\n%s\nvolume (moved to the local prefix):\n%s", got, want)
	}
	for m, file := range lf.Files {
		if !strings.HasPrefix(file, tree+"/") || strings.Replace(file, tree, gen, 1) != vf.Files[m] {
			t.Errorf("%s: local %s, volume %s", m, file, vf.Files[m])
		}
	}
	if !strings.HasPrefix(lf.Blob, tree+"/") || !strings.HasPrefix(lf.BlobReal, filepath.Join(f.vol, ".volboot", "store")+"/") || lf.BlobSize != 300<<10 {
		t.Errorf("big file: %s -> %s (%d bytes), want a link from the local tree into the store", lf.Blob, lf.BlobReal, lf.BlobSize)
	}
	if fi, err := os.Lstat(filepath.Dir(lf.Blob)); err != nil || !fi.IsDir() || fi.Mode()&os.ModeSymlink != 0 {
		t.Errorf("the big file's directory is not a real directory of the local tree: %v", err)
	}
	if lf.Script != script || vf.Script != script {
		t.Errorf("console script %s printed %q (local) and %q (volume)", script, lf.Script, vf.Script)
	}
	if lf.PipList != vf.PipList || !strings.Contains(lf.PipList, pip.Spec.Version) {
		t.Errorf("pip list differs:\nlocal:\n%s\nvolume:\n%s", lf.PipList, vf.PipList)
	}
	if lf.PipCheck != vf.PipCheck || !strings.Contains(lf.PipCheck, "No broken requirements") {
		t.Errorf("pip check: local %q, volume %q", lf.PipCheck, vf.PipCheck)
	}

	// The next boot reuses the tree, starting no interpreter but the
	// handler.
	before := f.pythonStarts()
	r = f.run("run", "--layout", "local", "--", "python", "-c", "import "+mods[0])
	if r.code != 0 || !strings.Contains(r.stderr, "local tree reused") {
		t.Fatalf("second local run: exit %d\n%s", r.code, r.stderr)
	}
	if n := f.pythonStarts(); n != before {
		t.Errorf("the in-sync local boot started the interpreter %d times", n-before)
	}
	st2, r := f.status("--verify", "--layout", "local")
	if !st2.InSync || len(st2.Drift) != 0 {
		t.Fatalf("status --verify of a sound local tree:\n%s%s", r.stdout, r.stderr)
	}

	// A damaged local tree is found, repair removes it, the next run
	// lays it out again.
	victim := lf.Files[mods[2]]
	if err := os.WriteFile(victim, []byte("raise SystemExit('tampered')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st2, r = f.status("--verify", "--layout", "local")
	if st2.InSync || len(st2.Drift) != 2 || st2.Drift[0].Kind != bootstrap.DriftLocalTree || !strings.Contains(st2.Drift[1].Detail, "content differs") {
		t.Fatalf("status --verify of a tampered local tree:\n%s%s", r.stdout, r.stderr)
	}
	if r := f.run("repair", "--layout", "local"); r.code != 0 {
		t.Fatalf("repair: exit %d\n%s", r.code, r.stderr)
	}
	r = f.run("run", "--layout", "local", "--", "python", "-c", "import "+strings.Join(mods, ", "))
	if r.code != 0 || !strings.Contains(r.stderr, "laid out from its pack") {
		t.Fatalf("run after repair: exit %d\n%s", r.code, r.stderr)
	}
	// A tree without its marker (a container killed while laying it out
	// and renamed... or damaged by hand) is made again at boot.
	if err := os.Remove(filepath.Join(tree, ".complete")); err != nil {
		t.Fatal(err)
	}
	r = f.run("run", "--layout", "local", "--", "python", "-c", "import "+strings.Join(mods, ", "))
	if r.code != 0 || !strings.Contains(r.stderr, "laid out from its pack") {
		t.Fatalf("run over a tree without its marker: exit %d\n%s", r.code, r.stderr)
	}
	if st2, r := f.status("--verify", "--layout", "local"); !st2.InSync {
		t.Fatalf("status --verify after the tree was made again:\n%s%s", r.stdout, r.stderr)
	}

	// auto on local disk runs from the volume, and says why.
	r = f.run("run", "--", "python", "-c", "import sys; print(sys.prefix)")
	if r.code != 0 || strings.TrimSpace(r.stdout) != gen || !strings.Contains(r.stderr, "layout volume: the volume is on") {
		t.Errorf("run --layout auto on a local volume: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A budget too small for the tree: the volume layout, saying so.
	other := t.TempDir()
	r = f.run("run", "--layout", "local", "--local-dir", other, "--local-budget", "1K", "--", "python", "-c", "import sys; print(sys.prefix)")
	if r.code != 0 || strings.TrimSpace(r.stdout) != gen || !strings.Contains(r.stderr, "local budget") {
		t.Errorf("run with a local budget too small: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The local tree is relocatable: moved, its interpreter and scripts
	// still work from where they are.
	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(tree, moved); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(moved, "bin", "python"), "-c", "import sys, "+strings.Join(mods, ", ")+"; print(sys.prefix)").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != moved {
		t.Errorf("python of the moved local tree: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(moved, "bin", script)).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != script {
		t.Errorf("console script of the moved local tree: %v\n%s", err, out)
	}
}

// TestLocalLayoutConcurrentAndKilled: workers of one container laying out
// the same generation at once all run from one complete tree; runs killed
// (with their process group) while laying it out leave nothing a later
// run takes for complete, and the run that finally finishes leaves a tree
// status --verify finds sound, with no half-made tree beside it.
func TestLocalLayoutConcurrentAndKilled(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("lkill", 4, 300)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	id := f.sync()
	var mods []string
	for _, w := range ws {
		mods = append(mods, w.Spec.Module())
	}
	handler := "import sys, " + strings.Join(mods, ", ") + "; print(sys.prefix)"
	tree := filepath.Join(f.local, "envs", id)

	var runs []*background
	for range 4 {
		runs = append(runs, f.start("run", "--layout", "local", "--", "python", "-c", handler))
	}
	for i, b := range runs {
		r := b.wait()
		if r.code != 0 || strings.TrimSpace(r.stdout) != tree {
			t.Fatalf("concurrent run %d: exit %d\n%s%s", i, r.code, r.stdout, r.stderr)
		}
	}
	if st, r := f.status("--verify", "--layout", "local"); !st.InSync {
		t.Fatalf("status --verify after concurrent runs:\n%s%s", r.stdout, r.stderr)
	}

	// How long a layout takes here, to spread the kills over it.
	if err := os.RemoveAll(f.local); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if r := f.run("run", "--layout", "local", "--", "true"); r.code != 0 {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	full := time.Since(t0)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 17))
	kills := 0
	for try := 0; try < 12 && kills < 5; try++ {
		if err := os.RemoveAll(f.local); err != nil {
			t.Fatal(err)
		}
		for k := 0; k < 3; k++ {
			if crash(t, f.command("run", "--layout", "local", "--", "true"), time.Duration(rng.Int64N(int64(full))), true) {
				kills++
			}
			if _, err := os.Stat(filepath.Join(tree, ".complete")); err == nil {
				if problems, err := verifyTree(f, id); err != nil || len(problems) != 0 {
					t.Fatalf("after a kill, the tree in place is marked complete but: %v %v", problems, err)
				}
			}
		}
		r := f.run("run", "--layout", "local", "--", "python", "-c", handler)
		if r.code != 0 || strings.TrimSpace(r.stdout) != tree {
			t.Fatalf("run after kills: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if ents, _ := os.ReadDir(filepath.Join(f.local, "envs")); len(ents) != 1 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("after a finished run, envs holds %v", names)
		}
	}
	if kills == 0 {
		t.Fatalf("no kill landed while laying out (a layout takes %s here)", full)
	}
	st, r := f.status("--verify", "--layout", "local")
	if !st.InSync || len(st.Drift) != 0 {
		t.Fatalf("status --verify after the kills:\n%s%s", r.stdout, r.stderr)
	}
	t.Logf("%d runs killed while laying out a tree that takes %s", kills, full.Round(time.Millisecond))
}

// verifyTree runs status --verify and returns its local-tree drift.
func verifyTree(f *fixture, id string) ([]string, error) {
	st, _ := f.status("--verify", "--layout", "local")
	var out []string
	for _, d := range st.Drift {
		if d.Kind == bootstrap.DriftLocalTree {
			out = append(out, d.Detail)
		}
	}
	return out, nil
}

// TestLocalTreeInUse holds the in-use rule with real workers of one
// container (DESIGN.md §5.8): while worker A's handler runs from its local
// tree, a worker that cannot reuse the tree (the volume at another path)
// runs from the volume instead of replacing it, and the background
// collection of a worker on the next generation leaves it (and removes an
// unused tree); A's handler then imports the rest of its modules from its
// tree, and once A is gone, gc removes the tree.
func TestLocalTreeInUse(t *testing.T) {
	f := newFixture(t, "")
	ws := f.add(synthstack.Small("inuse", 3, 6)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	r := f.run("sync", "--layout", "local")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s", r.code, r.stderr)
	}
	x := generationOf(t, r.stdout)
	treeX := filepath.Join(f.local, "envs", x)

	// A: imports one module, says so, waits, imports the others, and
	// prints what its descriptor 3 is and where its modules came from.
	dir := t.TempDir()
	ready, goOn := filepath.Join(dir, "ready"), filepath.Join(dir, "go")
	handlerA := fmt.Sprintf(`import os, sys, time
import %s
open(%q, "w").write(sys.prefix)
deadline = time.time() + 120
while not os.path.exists(%q) and time.time() < deadline:
    time.sleep(0.02)
import %s, %s
print(os.readlink("/proc/self/fd/3"))
print("\n".join(m.__file__ for m in (%[1]s, %[4]s, %[5]s)))
`, ws[0].Spec.Module(), ready, goOn, ws[1].Spec.Module(), ws[2].Spec.Module())
	a := f.start("run", "--layout", "local", "--", "python", "-c", handlerA)
	waitFile(t, ready, a)
	before, err := os.Lstat(treeX)
	if err != nil {
		t.Fatal(err)
	}

	// C cannot reuse A's tree (its links would point into the volume at
	// another path): it runs from the volume, and leaves the tree.
	sym := filepath.Join(dir, "vol")
	if err := os.Symlink(f.vol, sym); err != nil {
		t.Fatal(err)
	}
	r = f.run("run", "--layout", "local", "--volume", sym, "--", "python", "-c", "import sys; print(sys.prefix)")
	if r.code != 0 || strings.TrimSpace(r.stdout) != filepath.Join(sym, ".volboot", "envs", x) ||
		!strings.Contains(r.stderr, "layout volume: the local tree could not be made") || !strings.Contains(r.stderr, "runs from it") {
		t.Fatalf("a worker that cannot reuse a tree in use: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The next generation (one package fewer): B's background collection
	// removes an unused tree and leaves A's. B's handler ends once the
	// unused one (named to come last) is gone.
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws[:2]...)}}, f.entries("core", ws[:2]...))
	unused := filepath.Join(f.local, "envs", "zz-unused")
	if err := os.MkdirAll(filepath.Join(unused, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	r = f.run("run", "--layout", "local", "--", "python", "-c", fmt.Sprintf(`import os, time
deadline = time.time() + 60
while os.path.exists(%q) and time.time() < deadline:
    time.sleep(0.02)
`, unused))
	if r.code != 0 || !strings.Contains(r.stderr, "layout local") {
		t.Fatalf("worker B: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Lstat(unused); !os.IsNotExist(err) {
		t.Fatalf("the unused local tree is still there: %v\n%s", err, r.stderr)
	}
	if !strings.Contains(r.stderr, `"in_use":["`+x+`"]`) {
		t.Errorf("B's collection does not report A's tree in use:\n%s", r.stderr)
	}
	after, err := os.Lstat(treeX)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("A's tree left its name while A ran: %v", err)
	}

	// A imports the rest from its tree.
	if err := os.WriteFile(goOn, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ra := a.wait()
	files := strings.Fields(ra.stdout)
	if ra.code != 0 || len(files) != 4 {
		t.Fatalf("A: exit %d\n%s%s", ra.code, ra.stdout, ra.stderr)
	}
	// The handler holds the tree's lease too (descriptor 3), so the tree
	// stays leased even if volboot dies before it.
	if files[0] != treeX {
		t.Errorf("A's descriptor 3 is %s, want its tree's lease on %s", files[0], treeX)
	}
	for _, file := range files[1:] {
		if !strings.HasPrefix(file, treeX+"/") {
			t.Errorf("A imported %s, not from its tree %s", file, treeX)
		}
	}

	// A gone (and its use-lease on the volume), gc --dry-run lists X's
	// local tree with its size and leaves it; gc removes generation X from
	// the volume and its local tree.
	r = f.run("gc", "--dry-run", "--layout", "local")
	if r.code != 0 || !strings.Contains(r.stdout, "would remove local tree "+x) || !strings.Contains(r.stdout, "of local disk under "+f.local) {
		t.Fatalf("gc --dry-run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if after, err := os.Lstat(treeX); err != nil || !os.SameFile(before, after) {
		t.Fatalf("gc --dry-run moved the local tree: %v", err)
	}
	r = f.run("gc", "--layout", "local")
	if r.code != 0 || !strings.Contains(r.stdout, "removed local tree "+x) {
		t.Fatalf("gc: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Lstat(treeX); !os.IsNotExist(err) {
		t.Fatalf("gc left the local tree: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.local, "trash")); len(ents) != 0 {
		t.Errorf("gc left %d items in the local trash", len(ents))
	}
}

// waitFile waits until path exists, failing if b ends first.
func waitFile(t *testing.T, path string, b *background) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case r := <-b.done:
			t.Fatalf("the worker ended before %s appeared: exit %d\n%s%s", path, r.code, r.stdout, r.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
	}
}

// TestSmokeCheckFromTheLocalTree: a worker that will run from a local tree
// packs the generation before its smoke check and imports from the tree
// (on a network volume each import costs round trips per module); an
// import that fails there degrades its group as on the volume. What the
// passing imports read in the tree is recorded as the generation's, so
// the generation built without the failed group reuses their passes
// (§5.5) and lays nothing out for a check. The handler's run lays its
// tree out then; a sync whose imports all passed before lays nothing out.
func TestSmokeCheckFromTheLocalTree(t *testing.T) {
	f := newFixture(t, "")
	core := f.add(synthstack.Small("slt-core", 2, 6)...)
	bad := synthstack.Small("slt-bad", 1, 4)
	bad[0].ImportError = true
	extra := f.add(bad...)
	f.write([]synthstack.Group{
		{Name: "core", Required: true, Requirements: requirements(core...)},
		{Name: "extra", Requirements: requirements(extra...)},
	}, append(f.entries("core", core...), f.entries("extra", extra...)...))
	r := f.run("sync", "-v", "--layout", "local")
	if r.code != 0 {
		t.Fatalf("sync --layout local: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	id := generationOf(t, r.stdout)
	if n := strings.Count(r.stderr, "smoke check from the local tree"); n != 1 {
		t.Errorf("%d smoke checks from a local tree, want 1 (the first generation's; the one without extra reuses its passes)\n%s", n, r.stderr)
	}
	if !strings.Contains(r.stderr, "2 in an earlier one with the same dependencies; checking 0") {
		t.Errorf("the generation without extra did not reuse the passes recorded from the first one's local tree:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "smoke check failed") || !strings.Contains(r.stderr, "is built for another ABI") {
		t.Errorf("the failing import was not reported from the local tree:\n%s", r.stderr)
	}
	// What the imports read in the tree is recorded as the generation's,
	// so later generations can reuse the passes (§5.5).
	if strings.Contains(r.stderr, "holds in this generation only") {
		t.Errorf("an import checked from the local tree got no reusable record:\n%s", r.stderr)
	}
	st, _ := f.status()
	if state, reason := st.group("extra"); state != "degraded" || !strings.Contains(reason, "another ABI") {
		t.Errorf("group extra: %s %q, want degraded by its import", state, reason)
	}
	r = f.run("run", "-v", "--layout", "local", "--", "python", "-c", "import "+core[0].Spec.Module())
	if r.code != 0 || !strings.Contains(r.stderr, "layout local:") {
		t.Fatalf("run did not run from a local tree of %s: exit %d\n%s", id, r.code, r.stderr)
	}
	r = f.run("sync", "-v", "--layout", "local")
	if r.code != 0 || strings.Contains(r.stderr, "smoke check from the local tree") {
		t.Fatalf("an in-sync sync laid a tree out for a smoke check: exit %d\n%s", r.code, r.stderr)
	}
}
