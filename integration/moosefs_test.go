package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/integration/mfsrig"
)

// The MooseFS tests share one rig per test binary (started by the first
// test that asks, closed by TestMain): its start costs seconds, and each
// test works in a directory of its own on it.
var moose struct {
	once sync.Once
	rig  *mfsrig.Rig
	err  error
}

// mooseRig returns the package's MooseFS rig. Where no rig can run, the
// test skips saying why, except in CI (CI set), where the MooseFS tests are
// part of the suite and a rig that cannot start fails them.
func mooseRig(t *testing.T) *mfsrig.Rig {
	t.Helper()
	if err := mfsrig.Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI runs the MooseFS tests, but: %v (.ci/run installs the packages)", err)
		}
		t.Skipf("no MooseFS here: %v", err)
	}
	moose.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		moose.rig, moose.err = mfsrig.Start(ctx, mfsrig.Options{
			Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "mfsrig: "+format+"\n", args...) },
		})
	})
	if moose.err != nil {
		t.Fatal(moose.err)
	}
	return moose.rig
}

// closeMooseRig closes the rig if a test started it.
func closeMooseRig() {
	if moose.rig != nil {
		if err := moose.rig.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "mfsrig:", err)
		}
	}
}

// mooseVolume makes an empty directory for the test on the rig and returns
// its path through each of the given clients (the same directory seen from
// several hosts). It is not removed: deleting costs round trips, and the
// rig's directory goes when the rig closes.
func mooseVolume(t *testing.T, clients ...*mfsrig.Client) []string {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()) + "-" + hex.EncodeToString(rnd[:])
	if err := os.Mkdir(filepath.Join(clients[0].Mount, name), 0o755); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range clients {
		out = append(out, filepath.Join(c.Mount, name))
	}
	return out
}

// on is f seen from another host: the same index, manifest and interpreter
// with the volume at vol (the same directory through another client).
func (f *fixture) on(vol string) *fixture {
	return &fixture{t: f.t, work: f.work, wheels: f.wheels, vol: vol, index: f.index, srv: f.srv,
		python: f.python, pyLog: f.pyLog, env: append([]string(nil), f.env...)}
}

// TestMooseFSLifecycle runs a small stack's whole life on MooseFS through a
// client 2 ms from its master, and checks each step from the other client
// too (another host on the same volume): sync, status --verify, run,
// repair of a tampered file, a second generation, gc.
func TestMooseFSLifecycle(t *testing.T) {
	rig := mooseRig(t)
	cs := rig.Clients()
	vols := mooseVolume(t, cs[0], cs[1])
	f := newFixture(t, vols[0])
	other := f.on(vols[1])
	ws := f.add(synthstack.Small("mlife", 4, 20)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))

	t0 := time.Now()
	id := f.sync()
	t.Logf("first sync on MooseFS: %s", time.Since(t0).Round(time.Millisecond))
	for name, g := range map[string]*fixture{"client 0": f, "client 1": other} {
		st, r := g.status("--verify")
		if !st.InSync || !st.Verified || len(st.Drift) != 0 || *st.Generation != id {
			t.Fatalf("status --verify through %s:\n%s%s", name, r.stdout, r.stderr)
		}
	}
	t0 = time.Now()
	if got := other.sync(); got != id {
		t.Fatalf("the other host's sync built %s, want %s", got, id)
	}
	t.Logf("in-sync boot through the other client: %s", time.Since(t0).Round(time.Millisecond))

	// run: the handler imports every package from its generation.
	var mods []string
	for _, w := range ws {
		mods = append(mods, w.Spec.Module())
	}
	handler := "import sys, " + strings.Join(mods, ", ") + "; print('prefix', sys.prefix)"
	r := other.run("run", "--", "python", "-c", handler)
	if r.code != 0 || !strings.Contains(r.stdout, "prefix "+filepath.Join(vols[1], ".volboot", "envs", id)) {
		t.Fatalf("run through client 1: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// repair: a store file changed behind volboot's back, seen from the
	// other host, mended by this one.
	victims, _ := filepath.Glob(filepath.Join(vols[1], ".volboot", "envs", id, "lib", "python*", "site-packages", ws[2].Spec.Module(), "__init__.py"))
	if len(victims) != 1 {
		t.Fatalf("no %s in the generation", ws[2].Spec.Module())
	}
	if err := os.WriteFile(victims[0], []byte("raise SystemExit('tampered')\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, r := f.status("--verify")
	if st.InSync || len(st.Drift) == 0 || st.Drift[0].Kind != "corrupt-file" || st.Drift[0].Package != ws[2].Spec.Name {
		t.Fatalf("status --verify after tampering with %s through the other client:\n%s%s", ws[2].Spec.Name, r.stdout, r.stderr)
	}
	if r := f.run("repair"); r.code != 0 {
		t.Fatalf("repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	st, r = other.status("--verify")
	if !st.InSync || len(st.Drift) != 0 || *st.Generation != id {
		t.Fatalf("status --verify through the other client after repair:\n%s%s", r.stdout, r.stderr)
	}

	// A new lock makes a second generation; gc then removes the first.
	v2 := f.add(synthstack.Spec{Name: "mlife-03", Version: "2.0", PyFiles: 3})[0]
	next := append(append([]synthstack.Wheel(nil), ws[:3]...), v2)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(next...)}}, f.entries("core", next...))
	id2 := other.sync()
	if id2 == id {
		t.Fatal("a new lock built no new generation")
	}
	if r := f.run("gc"); r.code != 0 {
		t.Fatalf("gc: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Lstat(filepath.Join(vols[1], ".volboot", "envs", id)); !os.IsNotExist(err) {
		t.Errorf("gc kept the old generation %s (%v)", id, err)
	}
	st, r = other.status("--verify")
	if !st.InSync || len(st.Drift) != 0 || *st.Generation != id2 {
		t.Fatalf("status --verify after gc:\n%s%s", r.stdout, r.stderr)
	}
	py := filepath.Join(vols[1], ".volboot", "envs", id2, "bin", "python")
	if out, err := exec.Command(py, "-c", "import "+v2.Spec.Module()).CombinedOutput(); err != nil {
		t.Fatalf("import from the new generation: %v\n%s", err, out)
	}
}
