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

// closeMooseRig closes the rig if a test started it, first printing the
// ends of MooseFS's logs when a test failed.
func closeMooseRig(failed bool) {
	if moose.rig != nil {
		if failed {
			fmt.Fprintf(os.Stderr, "mfsrig: the ends of MooseFS's logs:\n%s", moose.rig.LogTails(30))
		}
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

// runConcurrently runs `volboot sync` once per fixture, all at once, and
// returns their results in order.
func runConcurrently(t *testing.T, fs []*fixture, args ...string) []result {
	t.Helper()
	results := make([]result, len(fs))
	var wg sync.WaitGroup
	for i, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = f.run("sync", args...)
		}()
	}
	wg.Wait()
	return results
}

// TestMooseFSConcurrentSyncs starts 8 syncs of one empty volume at once,
// 4 through each of two clients (two hosts): every one exits 0 with the
// same generation, each wheel is downloaded once, and status --verify is
// clean from both hosts. MooseFS's flock excludes across clients (see
// mfsrig.TestFlockAcrossClients), so no worker may conclude that it is
// unreliable. Then the same with flock broken (clients mounted with
// mfsnobsdlocks, where flock only excludes within one client): still
// nothing corrupt, and the volume is marked flock-unreliable. And with no
// lock at all: 8 writers racing on every name, and still nothing corrupt
// (DESIGN.md rule 2 on MooseFS's rename and create semantics).
func TestMooseFSConcurrentSyncs(t *testing.T) {
	rig := mooseRig(t)
	for _, c := range []struct {
		name   string
		broken bool // flock local to each client
		off    bool // no lock at all (VOLBOOT_LOCK_MODE=off)
	}{{name: "flock"}, {name: "flock-broken", broken: true}, {name: "lock-off", off: true}} {
		t.Run(c.name, func(t *testing.T) {
			cs := rig.Clients()[:2]
			if c.broken {
				cs = nil
				for range 2 {
					cl, err := rig.AddClient(context.Background(), "mfsnobsdlocks")
					if err != nil {
						t.Fatal(err)
					}
					cs = append(cs, cl)
				}
			}
			vols := mooseVolume(t, cs...)
			f := newFixture(t, vols[0])
			ws := f.add(synthstack.Small("mconc", 8, 20)...)
			f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
			if c.off {
				f.env = append(f.env, "VOLBOOT_LOCK_MODE=off")
			}
			var fs []*fixture
			for i := range 8 {
				fs = append(fs, f.on(vols[i%2]))
			}
			t0 := time.Now()
			results := runConcurrently(t, fs)
			var ids []string
			for i, r := range results {
				if r.code != 0 {
					t.Fatalf("sync %d (client %d): exit %d\n%s%s", i, i%2, r.code, r.stdout, r.stderr)
				}
				ids = append(ids, generationOf(t, r.stdout))
			}
			t.Logf("8 syncs through 2 clients: %s", time.Since(t0).Round(time.Millisecond))
			if os.Getenv("MFS_DEBUG") != "" {
				for i, r := range results {
					t.Logf("sync %d:\n%s", i, r.stderr)
				}
			}
			for _, id := range ids[1:] {
				if id != ids[0] {
					t.Fatalf("syncs disagree on the generation: %v", ids)
				}
			}
			// Under a broken flock one worker may take the lock from a live
			// holder before the volume is marked, and fetch what that
			// holder was fetching: duplicate work, never damage.
			var served, total int64
			for _, w := range ws {
				s := f.stats(w)
				served, total = served+s.Bytes, total+w.Size
				if !c.broken && !c.off && (s.Requests != 1 || s.Bytes != w.Size) {
					t.Errorf("%s: %d requests, %d bytes served for a %d-byte wheel; want it served once", w.Filename, s.Requests, s.Bytes, w.Size)
				}
			}
			t.Logf("the index served %d bytes for %d bytes of wheels", served, total)
			for i, v := range vols {
				g := f.on(v)
				st, r := g.status("--verify")
				if !st.InSync || len(st.Drift) != 0 || *st.Generation != ids[0] {
					t.Fatalf("status --verify through client %d:\n%s%s", i, r.stdout, r.stderr)
				}
				py := filepath.Join(v, ".volboot", "envs", ids[0], "bin", "python")
				if out, err := exec.Command(py, "-c", "import mconc_00, mconc_07").CombinedOutput(); err != nil {
					t.Errorf("import through client %d: %v\n%s", i, err, out)
				}
			}
			_, err := os.Stat(filepath.Join(vols[0], ".volboot", "flock-unreliable"))
			switch {
			case !c.broken && err == nil:
				t.Errorf("a worker marked MooseFS's flock unreliable, but it excludes across clients")
			case c.broken && err != nil:
				t.Errorf("with flock local to each client, no worker noticed: %v", err)
			}
		})
	}
}

// TestMooseFSCrashTorture: at least 30 SIGKILLs at random moments of syncs
// on MooseFS, through the client 2 ms from its master (see torture).
func TestMooseFSCrashTorture(t *testing.T) {
	rig := mooseRig(t)
	base := mooseVolume(t, rig.Clients()[0])[0]
	f := newFixture(t, filepath.Join(base, "reference"))
	ws := f.add(synthstack.Small("mcrash", 4, 24)...)
	torture(t, f, ws, base, 30, 4*time.Minute, false)
}
