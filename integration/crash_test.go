package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/integration/testindex"
)

// fastDir is a directory on tmpfs when the machine has one, so that crash
// iterations cost process time rather than disk flushes.
func fastDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "volboot-it-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// TestCrashTorture kills `volboot sync` (alone, or with everything it
// started as a container's death does) with SIGKILL at random moments
// spread over a sync's duration: downloading, unpacking, compiling, building,
// smoke-checking, flipping. See torture for what is checked.
func TestCrashTorture(t *testing.T) {
	base := fastDir(t)
	f := newFixture(t, filepath.Join(base, "reference"))
	ws := f.add(synthstack.Small("crash", 6, 80)...)
	// About 1.3 s a kill on CI's 2 cores beside the rest of the suite.
	torture(t, f, ws, base, 60*time.Millisecond, newQuota(100, 25, 50*time.Second), true)
}

// torture serves ws (with a stall in every response, so that the fetching
// phase has a share of the sync's time), syncs them once into
// f.vol undisturbed, then kills syncs until wantKills landed. After every
// kill, status must not claim in sync for an incomplete generation, and
// venv must point only at a complete one. Kills come in chains of one to
// four on the same volume (each restart inherits the leftovers of the
// last), then a sync runs to the end and must converge to the generation
// the undisturbed sync built. Each chain works on a fresh volume under base
// holding only the interpreter probe's cache (written once, atomically; a
// probe costs more than half a small sync); removeOld says whether the
// last chain's volume is removed first (not on a network filesystem, where
// deleting costs a round trip per file). The last volume is kept for status
// --verify. q bounds the kills (chains are completed: a chain started
// before the time runs out converges).
func torture(t *testing.T, f *fixture, ws []synthstack.Wheel, base string, stall time.Duration, q *quota, removeOld bool) {
	t.Helper()
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
	var mods []string
	for _, w := range ws {
		mods = append(mods, w.Spec.Module())
	}
	importAll := "import " + strings.Join(mods, ", ")
	for _, w := range ws {
		if err := f.index.SetFault(testindex.FileURLPath(w.Filename), testindex.Fault{Stall: stall, StallAfter: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	want := f.sync()
	reference := f.vol
	chain := 0
	fresh := func() {
		old := f.vol
		chain++
		f.vol = filepath.Join(base, fmt.Sprintf("vol-%d", chain))
		freshVolume(t, reference, f.vol)
		if removeOld && old != reference {
			if err := os.RemoveAll(old); err != nil {
				t.Fatal(err)
			}
		}
	}
	fresh()
	t0 := time.Now()
	watched := watchPhases(f.index, f.vol, ws)
	if got := f.sync(); got != want {
		t.Fatalf("sync with a copied interpreter cache built %s, the reference %s", got, want)
	}
	full := time.Since(t0)
	fetchEnd, unpackEnd := watched()
	t.Logf("undisturbed sync: generation %s in %s, its downloads done at %s, its store entries at %s", want, full.Round(time.Millisecond), fetchEnd.Round(time.Millisecond), unpackEnd.Round(time.Millisecond))

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 6))
	t.Logf("seed %d", seed)
	start := time.Now()
	kills, groupKills, finished, chains := 0, 0, 0, 0
	var delays []time.Duration
	phases := map[string]int{}
	for q.more(kills) {
		fresh()
		chains++
		for k, n := 0, 1+rng.IntN(4); k < n; k++ {
			delay := time.Duration(rng.Int64N(int64(full) * 11 / 10))
			// The first kill of a chain, on a fresh volume, lands in the
			// middle of the downloads (chains 1, 4, ...) or of the
			// unpacking that follows the last one (chains 2, 5, ...), as
			// timed in the undisturbed sync: the phases' shares of a sync
			// move with the machine's load and the filesystem, and a
			// spread over the whole sync can miss the short ones. A
			// quota's minimum (two chains at least) thus kills in both.
			if k == 0 && chains%3 == 1 && fetchEnd > 0 {
				delay = fetchEnd/5 + time.Duration(rng.Int64N(int64(fetchEnd)*3/5))
			}
			if k == 0 && chains%3 == 2 && unpackEnd > fetchEnd {
				delay = fetchEnd + (unpackEnd-fetchEnd)/4 + time.Duration(rng.Int64N(int64(unpackEnd-fetchEnd)/2+1))
			}
			group := rng.IntN(2) == 0
			if crashSync(t, f, delay, group) {
				kills++
				if group {
					groupKills++
				}
				delays = append(delays, delay)
				phases[phaseOnDisk(f.vol, len(ws))]++
			} else {
				finished++
			}
			checkAfterCrash(t, f, importAll)
		}
		if got := f.sync(); got != want {
			t.Fatalf("after %d kills, sync converged to %s, the undisturbed sync to %s", kills, got, want)
		}
		st, r := f.status()
		if !st.InSync || *st.Generation != want {
			t.Fatalf("status after converging:\n%s%s", r.stdout, r.stderr)
		}
	}
	q.check(t, kills, "kills", "an undisturbed sync takes "+full.Round(time.Millisecond).String()+" here")
	st, r := f.status("--verify")
	if !st.InSync || !st.Verified || len(st.Drift) != 0 {
		t.Fatalf("status --verify after the torture:\n%s%s", r.stdout, r.stderr)
	}
	// The pack the kills let some sync finish is sound: the local layout
	// runs from it.
	r = f.run("run", "--layout", "local", "--", "python", "-c", importAll+"; import sys; print(sys.prefix)")
	if r.code != 0 || strings.TrimSpace(r.stdout) != filepath.Join(f.local, "envs", want) {
		t.Fatalf("run --layout local after the torture: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Killed moments, in tenths of the undisturbed sync's duration.
	hist := make([]int, 11)
	for _, d := range delays {
		hist[min(10, int(d*10/full))]++
	}
	t.Logf("%d kills (%d of the process group) in %d chains (%d syncs finished before their kill) in %s; kill moments by tenth of a sync: %v; the volume after each kill: %v",
		kills, groupKills, chains, finished, time.Since(start).Round(time.Millisecond), hist, phases)
	// Building is a few per cent of a sync: demand only the long phases
	// by name, and variety overall.
	for _, p := range []string{"fetching", "unpacking"} {
		if phases[p] == 0 {
			t.Errorf("no kill landed while %s: %v", p, phases)
		}
	}
	// Variety needs numbers: a busy machine's quota may allow few kills.
	if len(phases) < 3 && kills >= 12 {
		t.Errorf("kills landed in only %d phases: %v", len(phases), phases)
	}
}

// watchPhases watches a sync of ws onto vol: the index serving every byte
// of ws (once more than it had when called) and the store holding a
// complete entry for each. The function it returns stops watching and
// says how long each took (0: not seen).
func watchPhases(index *testindex.Server, vol string, ws []synthstack.Wheel) func() (fetched, unpacked time.Duration) {
	base := make([]int64, len(ws))
	for i, w := range ws {
		base[i] = index.Stats(testindex.FileURLPath(w.Filename)).Bytes
	}
	start := time.Now()
	stop := make(chan struct{})
	type result struct{ fetched, unpacked time.Duration }
	done := make(chan result, 1)
	go func() {
		var r result
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- r
				return
			case <-tick.C:
			}
			if r.fetched == 0 {
				all := true
				for i, w := range ws {
					if index.Stats(testindex.FileURLPath(w.Filename)).Bytes-base[i] < w.Size {
						all = false
						break
					}
				}
				if all {
					r.fetched = time.Since(start)
				}
				continue
			}
			if m, _ := filepath.Glob(filepath.Join(vol, ".volboot", "store", "*", wheel.CompleteName)); len(m) >= len(ws) {
				r.unpacked = time.Since(start)
				done <- r
				return
			}
		}
	}()
	return func() (time.Duration, time.Duration) {
		close(stop)
		r := <-done
		return r.fetched, r.unpacked
	}
}

// freshVolume makes an empty volume at vol holding only the interpreter
// probe's cache of the volume reference (written once, atomically; a probe
// costs more than half a small sync).
func freshVolume(t *testing.T, reference, vol string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(vol, ".volboot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", filepath.Join(reference, ".volboot", "cache"), filepath.Join(vol, ".volboot")).CombinedOutput(); err != nil {
		t.Fatalf("copy the interpreter cache: %v\n%s", err, out)
	}
}

// phaseOnDisk says how far the killed sync had come, judged by what the
// volume holds: "probing" (no download cache yet), "fetching" (fewer than
// n verified downloads; the wheels that landed unpack meanwhile),
// "unpacking" (every download in, fewer than n complete store entries,
// bytecode compiling included), "building" (no complete
// generation), "smoke-check/flip" (a complete generation that venv or
// state does not name yet), "recorded".
func phaseOnDisk(vol string, n int) string {
	count := func(pattern string) int {
		m, _ := filepath.Glob(filepath.Join(vol, pattern))
		return len(m)
	}
	switch {
	case count("cache/wheels") == 0:
		return "probing"
	case count("cache/wheels/*.whl") < n:
		return "fetching"
	case count(".volboot/store/*/"+wheel.CompleteName) < n:
		return "unpacking"
	}
	envs, _ := filepath.Glob(filepath.Join(vol, ".volboot", "envs", "*"))
	complete := ""
	for _, e := range envs {
		if _, err := venv.ReadMarker(e); err == nil {
			complete = filepath.Base(e)
		}
	}
	if complete == "" {
		return "building"
	}
	state, _ := os.ReadFile(filepath.Join(vol, ".volboot", "state.json"))
	if _, err := os.Lstat(filepath.Join(vol, "venv")); err != nil || !bytes.Contains(state, []byte(complete)) {
		return "smoke-check/flip"
	}
	return "recorded"
}

// crashSync starts a sync and, after delay, SIGKILLs it: its whole process
// group when group is set (a container dying), else volboot alone (its
// interpreter children then notice their closed pipes and exit on their
// own, possibly while the next sync runs). It reports whether the kill
// landed before the sync finished.
func crashSync(t *testing.T, f *fixture, delay time.Duration, group bool) bool {
	t.Helper()
	return crash(t, f.command("sync"), delay, group)
}

// crash starts cmd (a volboot command) and SIGKILLs it after delay, as
// crashSync does; a command that fails on its own fails the test.
func crash(t *testing.T, cmd *exec.Cmd, delay time.Duration, group bool) bool {
	t.Helper()
	killed, _ := crashOut(t, cmd, delay, group)
	return killed
}

// crashOut is crash that also returns what the command printed.
func crashOut(t *testing.T, cmd *exec.Cmd, delay time.Duration, group bool) (bool, string) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v failed on its own: %v\n%s", cmd.Args[1:2], err, out.String())
		}
		return false, out.String()
	case <-time.After(delay):
	}
	if group {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	} else {
		cmd.Process.Kill()
	}
	err := <-done
	if err == nil {
		return false, out.String() // finished in the instant before the kill
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("%v failed on its own: %v\n%s", cmd.Args[1:2], err, out.String())
	}
	return true, out.String()
}

// checkAfterCrash: status never says in sync for an incomplete generation,
// and venv points only at a complete one.
func checkAfterCrash(t *testing.T, f *fixture, importAll string) {
	t.Helper()
	r := f.run("status", "--json")
	if r.code != 0 && r.code != 1 {
		t.Fatalf("status after a kill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	st := decodeStatus(t, r)
	if st.InSync {
		gen := filepath.Join(f.vol, ".volboot", "envs", *st.Generation)
		if _, err := venv.ReadMarker(gen); err != nil {
			t.Fatalf("status says in sync, but generation %s is incomplete: %v", *st.Generation, err)
		}
		if out, err := exec.Command(filepath.Join(gen, "bin", "python"), "-c", importAll).CombinedOutput(); err != nil {
			t.Fatalf("status says in sync, but the generation does not import: %v\n%s", err, out)
		}
	}
	if link, err := os.Readlink(filepath.Join(f.vol, "venv")); err == nil {
		if _, err := venv.ReadMarker(filepath.Join(f.vol, link)); err != nil {
			t.Fatalf("venv -> %s, an incomplete generation: %v", link, err)
		}
	}
}
