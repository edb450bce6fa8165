package integration

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap"
)

// TestGCKillLoop kills `volboot gc` with SIGKILL at random moments while it
// removes an old generation and the store entry only that generation
// used; after every kill, syncing either manifest must succeed and status
// --verify must be clean (a half-removed entry under its final name used to
// fail every later sync). See gcKillLoop.
func TestGCKillLoop(t *testing.T) {
	gcKillLoop(t, newFixture(t, ""), 100, newQuota(50, 10, 40*time.Second))
}

// gcKillLoop keeps two manifests, A and B, that differ in one large
// package, and kills gc at random moments while it removes the generation
// of the manifest that is not current, and the store entry only that
// generation used. After each kill, a sync of that manifest (which must
// unpack the entry again) and a sync of the other must both succeed. The
// manifests then swap roles. At the end status --verify is clean and a
// last gc leaves no leftover of the killed ones.
func gcKillLoop(t *testing.T, f *fixture, files int, q *quota) {
	t.Helper()
	shared := f.add(synthstack.Small("gck", 3, 10)...)
	big := f.add(synthstack.Spec{Name: "gck-big", Version: "1.0", PyFiles: files, DataFiles: files, DataSize: 256},
		synthstack.Spec{Name: "gck-big", Version: "2.0", PyFiles: files, DataFiles: files, DataSize: 256, Seed: 7})
	stacks := [2][]synthstack.Wheel{
		append(append([]synthstack.Wheel(nil), shared...), big[0]),
		append(append([]synthstack.Wheel(nil), shared...), big[1]),
	}
	use := func(i int) {
		f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(stacks[i]...)}}, f.entries("core", stacks[i]...))
	}
	var ids [2]string
	use(0)
	ids[0] = f.sync()
	use(1)
	ids[1] = f.sync() // current: 1
	t0 := time.Now()
	if r := f.run("gc"); r.code != 0 || !strings.Contains(r.stdout+r.stderr, ids[0]) {
		t.Fatalf("gc of manifest 1 did not remove generation %s: exit %d\n%s%s", ids[0], r.code, r.stdout, r.stderr)
	}
	full := time.Since(t0)
	t.Logf("an undisturbed gc of one generation and its store entry: %s", full.Round(time.Millisecond))
	if got := f.sync(); got != ids[1] {
		t.Fatalf("after gc, sync of manifest 1 built %s, want %s", got, ids[1])
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 19))
	start := time.Now()
	kills, finished := 0, 0
	for q.more(kills) {
		// Both generations exist; gc of the current one's manifest
		// removes the other (the last one built is current).
		state, err := bootstrap.ReadState(filepath.Join(f.vol, ".volboot", "state.json"))
		if err != nil {
			t.Fatal(err)
		}
		cur := 0
		if state.Current == ids[1] {
			cur = 1
		}
		use(cur)
		if crash(t, f.command("gc"), time.Duration(rng.Int64N(int64(full)*12/10)), true) {
			kills++
		} else {
			finished++
		}
		// Every later boot, of either manifest, must succeed: the other
		// one first, which gc was removing.
		for _, i := range []int{1 - cur, cur} {
			use(i)
			if r := f.run("sync"); r.code != 0 || generationOf(t, r.stdout) != ids[i] {
				t.Fatalf("after %d gc kills, sync of manifest %d: exit %d\n%s%s", kills, i, r.code, r.stdout, r.stderr)
			}
		}
	}
	q.check(t, kills, "gc kills", "gc takes "+full.Round(time.Millisecond).String()+" here")
	st, r := f.status("--verify")
	if !st.InSync || len(st.Drift) != 0 {
		t.Fatalf("status --verify after the gc kills:\n%s%s", r.stdout, r.stderr)
	}
	if r := f.run("gc"); r.code != 0 {
		t.Fatalf("a final gc: exit %d\n%s", r.code, r.stderr)
	}
	for _, pattern := range []string{".volboot/store/.*vbtmp*", ".volboot/envs/.*vbtmp*"} {
		if m, _ := filepath.Glob(filepath.Join(f.vol, pattern)); len(m) > 0 {
			t.Errorf("a final gc left the killed ones' leftovers: %v", m)
		}
	}
	t.Logf("%d gc kills (%d gc runs finished first) in %s", kills, finished, time.Since(start).Round(time.Millisecond))
}

// TestGCRunRace starts `volboot run` of manifest A (whose generation is
// not current) and, 0-6 ms later, `gc` of manifest B, which removes A's
// generation unless a live use-lease names it. Every handler must find its
// whole generation for as long as it runs: run either leases in time for gc
// to keep it, or notices that gc is removing it and builds it again. Runs
// alternate between the volume and the local layout: a local tree's big
// files are links to the store, which the lease must keep as well.
func TestGCRunRace(t *testing.T) {
	gcRunRace(t, newFixture(t, fastDir(t)), func(f *fixture) *fixture { return f }, 0, newQuota(200, 25, 45*time.Second))
}

// gcRunRace races run and gc tries times; gc runs through
// collectorView(fixture) (the same volume, maybe seen from another host),
// started a random time in [-3 ms, gcLead+3 ms) before run (negative:
// after it).
func gcRunRace(t *testing.T, fa *fixture, collectorView func(*fixture) *fixture, gcLead time.Duration, q *quota) {
	t.Helper()
	shared := fa.add(synthstack.Small("race", 2, 6)...)
	x1 := fa.add(synthstack.Spec{Name: "race-x", Version: "1.0", PyFiles: 30, Blobs: 1, BlobSize: 300 << 10})[0]
	x2 := fa.add(synthstack.Spec{Name: "race-x", Version: "2.0", PyFiles: 30, Blobs: 1, BlobSize: 300 << 10, Seed: 3})[0]
	fb := fa.on(fa.vol)
	fb.work = t.TempDir()
	stackA := append(append([]synthstack.Wheel(nil), shared...), x1)
	stackB := append(append([]synthstack.Wheel(nil), shared...), x2)
	fa.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(stackA...)}}, fa.entries("core", stackA...))
	fb.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(stackB...)}}, fb.entries("core", stackB...))
	fa.sync()
	fb.sync() // current: B; gc of B removes A's generation unless leased
	// The handler reads every file of race_x after a pause, as a warm
	// load does: a generation removed under it shows.
	handler := `import os, sys, time
import race_x
d = os.path.dirname(race_x.__file__)
time.sleep(0.05)
n = 0
for root, _, files in os.walk(d):
    for name in files:
        open(os.path.join(root, name), 'rb').read()
        n += 1
if n < 31:
    sys.exit("only %d files of race_x left" % n)
print("read", n)
`
	fs, cur := [2]*fixture{fa, fb}, 1
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 20))
	start := time.Now()
	rebuilt, retried := 0, 0
	i := 0
	for ; q.more(i); i++ {
		runner, collector := fs[1-cur], fs[cur]
		lead := time.Duration(rng.Int64N(int64(gcLead+6*time.Millisecond))) - 3*time.Millisecond
		var run, gc *background
		layout := [2]string{"volume", "local"}[i%2]
		if lead > 0 {
			gc = collectorView(collector).start("gc")
			time.Sleep(lead)
			run = runner.start("run", "--layout", layout, "--", "python", "-c", handler)
		} else {
			run = runner.start("run", "--layout", layout, "--", "python", "-c", handler)
			time.Sleep(-lead)
			gc = collectorView(collector).start("gc")
		}
		if r := gc.wait(); r.code != 0 {
			t.Fatalf("try %d: gc: exit %d\n%s", i, r.code, r.stderr)
		}
		r := run.wait()
		if r.code != 0 || !strings.Contains(r.stdout, "read ") {
			t.Fatalf("try %d (layout %s): the handler lost its generation to gc: exit %d\n%s%s", i, layout, r.code, r.stdout, r.stderr)
		}
		if layout == "local" && !strings.Contains(r.stderr, "layout local:") {
			t.Fatalf("try %d: run --layout local did not run locally:\n%s", i, r.stderr)
		}
		if strings.Contains(r.stderr, "gc is removing the generation") {
			retried++
		}
		if strings.Contains(r.stderr, "generation ready") {
			// Built again, the runner's generation is now current: the
			// roles swap.
			rebuilt++
			cur = 1 - cur
		}
	}
	q.check(t, i, "run/gc races", "a race is a run and a gc, and sometimes a build")
	t.Logf("%d tries in %s: %d runs built their generation again (gc had removed it), %d of them caught gc removing it after choosing it",
		i, time.Since(start).Round(time.Millisecond), rebuilt, retried)
}

// TestGCDiedHoldingAMarker: gc sets a doomed generation's marker aside
// while it looks at the use-leases a last time; if it dies then, the next
// sync that needs that generation gives the marker back instead of taking
// the generation for incomplete and removing it under a handler that may
// be running from it.
func TestGCDiedHoldingAMarker(t *testing.T) {
	f := newFixture(t, fastDir(t))
	ws := f.add(synthstack.Small("gcdied", 3, 9)...)
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	id := f.sync()
	gen := filepath.Join(f.vol, ".volboot", "envs", id)
	mod, _ := filepath.Glob(filepath.Join(gen, "lib", "python*", "site-packages", ws[0].Spec.Module(), "__init__.py"))
	if len(mod) != 1 {
		t.Fatalf("no %s in the generation", ws[0].Spec.Module())
	}
	before, err := os.Stat(mod[0])
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(gen, ".complete")
	aside := filepath.Join(gen, "..complete.vbtmp.deadhost.4194303.0123456789ab")
	if err := os.Rename(marker, aside); err != nil {
		t.Fatal(err)
	}
	if got := f.sync(); got != id {
		t.Fatalf("sync built %s, want %s", got, id)
	}
	after, err := os.Stat(mod[0])
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the generation was rebuilt (or removed) instead of getting its marker back: %v", err)
	}
	if _, err := os.Stat(aside); !os.IsNotExist(err) {
		t.Errorf("the set-aside marker is still there: %v", err)
	}
	if st, r := f.status("--verify"); !st.InSync || len(st.Drift) != 0 {
		t.Fatalf("status --verify:\n%s%s", r.stdout, r.stderr)
	}
}
