package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/integration/mfsrig"
	"github.com/volboot/volboot/integration/testindex"
	"github.com/volboot/volboot/lockfile"
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
		python: f.python, pyLog: f.pyLog, env: append([]string(nil), f.env...),
		local: filepath.Join(f.t.TempDir(), "local")} // another host: another container disk
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
	r := other.run("run", "--layout", "volume", "--", "python", "-c", handler)
	if r.code != 0 || !strings.Contains(r.stdout, "prefix "+filepath.Join(vols[1], ".volboot", "envs", id)) {
		t.Fatalf("run --layout volume through client 1: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// auto on MooseFS (FUSE): the local layout, from the pack the sync
	// through the other client wrote; the next boot reuses the tree.
	for _, want := range []string{"laid out from its pack", "reused"} {
		t0 = time.Now()
		r = other.run("run", "--", "python", "-c", handler)
		if r.code != 0 || !strings.Contains(r.stdout, "prefix "+filepath.Join(other.local, "envs", id)) ||
			!strings.Contains(r.stderr, "a network or FUSE filesystem, where each import costs round trips") || !strings.Contains(r.stderr, want) {
			t.Fatalf("run (auto) through client 1: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		t.Logf("run in the local layout (%s): %s", want, time.Since(t0).Round(time.Millisecond))
	}
	if st, r := other.status("--verify"); !st.InSync || len(st.Drift) != 0 {
		t.Fatalf("status --verify of client 1's local tree:\n%s%s", r.stdout, r.stderr)
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

// TestMooseFSConcurrentSyncs starts 8 syncs of one empty volume, 4 through
// each of two clients (two hosts), the second four as soon as one of the
// first holds the lock: every one exits 0 with the
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
			if c.broken {
				// The first holder must still hold the lock when the
				// second client's workers arrive, or they find it
				// released and flock's fault never shows.
				slowDownloads(t, f, ws, 2*time.Second)
			}
			// The syncs through the first client start first; those
			// through the second once one of them holds the lock, so
			// that every one of them meets a live holder.
			t0 := time.Now()
			var bg []*background
			for range 4 {
				bg = append(bg, f.on(vols[0]).start("sync"))
			}
			if !c.off {
				waitHolder(t, vols[0], 1, 30*time.Second)
			}
			for range 4 {
				bg = append(bg, f.on(vols[1]).start("sync"))
			}
			var results []result
			for _, b := range bg {
				results = append(results, b.wait())
			}
			var ids []string
			for i, r := range results {
				if r.code != 0 {
					t.Fatalf("sync %d (client %d): exit %d\n%s%s", i, i/4, r.code, r.stdout, r.stderr)
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
			// The pack the racing syncs wrote serves workers of both hosts
			// booting at once in the local layout (auto, on FUSE).
			var runs []*background
			var hosts []*fixture
			for _, v := range vols {
				for range 2 {
					g := f.on(v)
					hosts = append(hosts, g)
					runs = append(runs, g.start("run", "--", "python", "-c", "import sys, mconc_00, mconc_07; print(sys.prefix)"))
				}
			}
			for i, b := range runs {
				r := b.wait()
				if want := filepath.Join(hosts[i].local, "envs", ids[0]); r.code != 0 || strings.TrimSpace(r.stdout) != want {
					t.Errorf("local run %d: exit %d, want prefix %s\n%s%s", i, r.code, want, r.stdout, r.stderr)
				}
			}
			// A broken flock shows when a worker takes it while another
			// holds it. Then either it takes the lock over from the live
			// holder (which, fenced, marks the volume), or it sees
			// another flock holder's claim appear while it holds flock
			// (and marks the volume itself): lockfile's package doc.
			stole, sawClaim := 0, 0
			for _, r := range results {
				stole += strings.Count(r.stderr, "flock is free, so its previous holder is gone")
				sawClaim += strings.Count(r.stderr, "another worker claimed the volume lock while this one held flock")
			}
			_, err := os.Stat(filepath.Join(vols[0], ".volboot", "flock-unreliable"))
			switch {
			case !c.broken && err == nil:
				t.Errorf("a worker marked MooseFS's flock unreliable, but it excludes across clients")
			case !c.broken && stole > 0:
				t.Errorf("%d takeovers of a live holder through a free flock, but MooseFS's flock excludes across clients", stole)
			case c.broken && err != nil:
				t.Errorf("with flock local to each client, workers through the second client met a live holder (%d takeovers through a free flock, %d saw a claim appear while holding flock), but the flock-unreliable marker: %v", stole, sawClaim, err)
			case c.broken:
				t.Logf("flock local to each client: %d takeover(s) of a live holder through a free flock, %d saw a claim appear while holding flock; flock marked unreliable", stole, sawClaim)
			}
		})
	}
}

// TestMooseFSCrashTorture: 20 SIGKILLs (at least 6 in the time given, 30
// with VOLBOOT_LONG_TESTS=1) at random moments of syncs on MooseFS, through
// the client 2 ms from its master (see torture). TestMooseFSKillLoop kills
// a bigger stack at fixed intervals besides; CI's 15 minutes are shared.
func TestMooseFSCrashTorture(t *testing.T) {
	rig := mooseRig(t)
	q := newQuota(20, 6, time.Minute)
	if os.Getenv("VOLBOOT_LONG_TESTS") != "" {
		q.want = 30
	}
	base := mooseVolume(t, rig.Clients()[0])[0]
	f := newFixture(t, filepath.Join(base, "reference"))
	ws := f.add(synthstack.Small("mcrash", 4, 24)...)
	// Unpacking and building take most of a sync on MooseFS: a longer
	// stall gives the fetching phase its share of the kills.
	torture(t, f, ws, base, 400*time.Millisecond, q, false)
}

// background is a volboot command running while a test disturbs it.
type background struct {
	t    *testing.T
	done chan result
}

// start runs `volboot cmd` in the background.
func (f *fixture) start(cmd string, more ...string) *background {
	b := &background{t: f.t, done: make(chan result, 1)}
	go func() { b.done <- f.run(cmd, more...) }()
	return b
}

// wait returns the command's result.
func (b *background) wait() result { return <-b.done }

// waitHolder waits until the volume lock in vol is held (not released)
// at an epoch of at least minEpoch, and returns the holder's record.
func waitHolder(t *testing.T, vol string, minEpoch uint64, within time.Duration) *lockfile.Holder {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := lockfile.ReadHolder(filepath.Join(vol, ".volboot"))
		if err == nil && st.Holder != nil && !st.Released && st.Epoch >= minEpoch {
			return st.Holder
		}
		if time.Now().After(deadline) {
			t.Fatalf("nobody took the volume lock in %s within %s (%+v, %v)", vol, within, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// slowDownloads makes each of ws take about d to download.
func slowDownloads(t *testing.T, f *fixture, ws []synthstack.Wheel, d time.Duration) {
	t.Helper()
	for _, w := range ws {
		if err := f.index.SetFault(testindex.FileURLPath(w.Filename), testindex.Fault{Stall: d, StallAfter: 1024}); err != nil {
			t.Fatal(err)
		}
	}
}

// checkConverged: status --verify is clean through every fixture, each
// seeing generation id, and the generation imports mods.
func checkConverged(t *testing.T, id string, mods []string, fs ...*fixture) {
	t.Helper()
	for i, g := range fs {
		st, r := g.status("--verify")
		if !st.InSync || len(st.Drift) != 0 || *st.Generation != id {
			t.Fatalf("status --verify through fixture %d, want generation %s:\n%s%s", i, id, r.stdout, r.stderr)
		}
		py := filepath.Join(g.vol, ".volboot", "envs", id, "bin", "python")
		if out, err := exec.Command(py, "-c", "import "+strings.Join(mods, ", ")).CombinedOutput(); err != nil {
			t.Fatalf("import through fixture %d: %v\n%s", i, err, out)
		}
	}
}

// oneClearError: a failed volboot command printed one error line naming
// what failed, not a dump.
func oneClearError(t *testing.T, what string, r result) {
	t.Helper()
	lines := failures(r.stderr)
	if len(lines) != 1 || strings.Contains(r.stderr, "goroutine ") {
		t.Fatalf("%s failed (exit %d) without one clear error:\n%s", what, r.code, r.stderr)
	}
	t.Logf("%s failed with: %s", what, lines[0])
}

// faultDuringSync starts a sync through f, waits until it holds the volume
// lock and lead more, then calls fault, and heal 10 s later, and returns
// the sync's result.
func faultDuringSync(t *testing.T, f *fixture, lead time.Duration, fault, heal func()) result {
	t.Helper()
	sync := f.start("sync")
	waitHolder(t, f.vol, 1, 30*time.Second)
	time.Sleep(lead)
	fault()
	time.Sleep(10 * time.Second)
	heal()
	return sync.wait()
}

// logTime is the time of the first JSON log line of stderr whose message
// starts with msg; zero when there is none.
func logTime(t *testing.T, stderr, msg string) time.Time {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		var rec struct {
			Msg string `json:"msg"`
			TS  string `json:"ts"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || !strings.HasPrefix(rec.Msg, msg) {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, rec.TS)
		if err != nil {
			t.Fatalf("log time %q: %v", rec.TS, err)
		}
		return ts
	}
	return time.Time{}
}

// TestMooseFSFaults disturbs syncs on MooseFS the ways a network volume
// fails: the master unreachable from the syncing host for 10 s, and until
// another host has taken the lock over and finished (25 s at least), a
// latency spike to 50 ms, the chunkserver gone during writes, and a host dying
// while it holds the lock. Each time the sync completes or fails with one
// clear error, no generation is ever corrupt, and the next sync converges.
func TestMooseFSFaults(t *testing.T) {
	rig := mooseRig(t)
	cs := rig.Clients()

	// setup makes a fresh volume seen through both clients and a stack of
	// n wheels whose downloads each take about slow.
	setup := func(t *testing.T, prefix string, n int, slow time.Duration) (*fixture, *fixture, []synthstack.Wheel, []string) {
		vols := mooseVolume(t, cs[0], cs[1])
		f := newFixture(t, vols[0])
		ws := f.add(synthstack.Small(prefix, n, 12)...)
		f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
		slowDownloads(t, f, ws, slow)
		var mods []string
		for _, w := range ws {
			mods = append(mods, w.Spec.Module())
		}
		return f, f.on(vols[1]), ws, mods
	}

	t.Run("master-unreachable-10s", func(t *testing.T) {
		f, other, _, mods := setup(t, "mcut", 8, 2*time.Second)
		r := faultDuringSync(t, f, time.Second, func() { cs[0].Proxy.Cut(true) }, func() { cs[0].Proxy.Cut(false) })
		if r.code != 0 {
			oneClearError(t, "a sync whose host lost the master for 10 s", r)
		}
		id := other.sync()
		checkConverged(t, id, mods, f, other)
	})

	t.Run("master-unreachable-while-another-host-takes-over", func(t *testing.T) {
		// Two manifests, so that each host's generation is its own and a
		// late write of the cut-off host would show.
		f, other, ws, mods := setup(t, "mfence", 8, 2*time.Second)
		other.work = t.TempDir()
		extra := f.add(synthstack.Spec{Name: "mfence-extra", Version: "1.0", PyFiles: 3})[0]
		withExtra := append(append([]synthstack.Wheel(nil), ws...), extra)
		other.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(withExtra...)}}, other.entries("core", withExtra...))
		const ttl = "15s"
		f.env = append(f.env, "VOLBOOT_LOCK_TTL="+ttl)
		other.env = append(other.env, "VOLBOOT_LOCK_TTL="+ttl)

		a := f.start("sync")
		held := waitHolder(t, f.vol, 1, 30*time.Second)
		time.Sleep(time.Second)
		cs[0].Proxy.Cut(true)
		cut := time.Now()
		b := other.start("sync")
		rb := b.wait()
		if rb.code != 0 {
			cs[0].Proxy.Cut(false)
			t.Fatalf("the other host's sync while the first was cut off: exit %d\n%s", rb.code, rb.stderr)
		}
		idB := generationOf(t, rb.stdout)
		t.Logf("the other host took over and finished %s after the cut", time.Since(cut).Round(time.Second))
		if !strings.Contains(rb.stderr, "took over the volume lock") {
			t.Errorf("the other host finished without taking the lock over from epoch %d:\n%s", held.Epoch, rb.stderr)
		}
		// Heal once the other host is done (at least 25 s into the cut,
		// beyond the TTL): the cut-off host's late writes then land after
		// the other's, the case that would undo them. (It waited for a
		// full 60 s before, for 35 s more of CI's minutes and no more
		// to check.)
		time.Sleep(max(time.Until(cut.Add(25*time.Second)), 2*time.Second))
		healed := time.Now()
		cs[0].Proxy.Cut(false)
		ra := a.wait()
		// Its heartbeat could not reach the volume: it must have counted
		// the lock as lost during the cut, not only once the volume
		// answered again.
		lostAt := logTime(t, ra.stderr, "volume lock lost")
		if lostAt.IsZero() || !lostAt.Before(healed) {
			t.Errorf("the cut-off host did not give the lock up during the cut (lost at %v, healed at %v):\n%s", lostAt, healed, ra.stderr)
		} else {
			t.Logf("the cut-off host gave the lock up %s into the cut", lostAt.Sub(cut).Round(100*time.Millisecond))
		}
		if ra.code != 0 {
			oneClearError(t, "the sync of the host cut off while another took over", ra)
		}
		// The cut-off host's late writes must not have undone the other
		// host's: its generation is recorded and in sync, and so is the
		// first host's once it syncs again.
		checkConverged(t, idB, append(mods, extra.Spec.Module()), other)
		idA := f.sync()
		checkConverged(t, idA, mods, f)
		checkConverged(t, idB, append(mods, extra.Spec.Module()), other)
	})

	t.Run("latency-spike-50ms", func(t *testing.T) {
		f, other, _, mods := setup(t, "mspike", 6, time.Second)
		r := faultDuringSync(t, f, 0, func() { cs[0].Proxy.SetRTT(50 * time.Millisecond) }, func() { cs[0].Proxy.SetRTT(mfsrig.DefaultRTT) })
		if r.code != 0 {
			t.Fatalf("a sync through a 10 s latency spike: exit %d\n%s", r.code, r.stderr)
		}
		checkConverged(t, generationOf(t, r.stdout), mods, f, other)
	})

	t.Run("chunkserver-stopped-during-writes", func(t *testing.T) {
		f, other, _, mods := setup(t, "mchunk", 8, time.Second)
		r := faultDuringSync(t, f, time.Second, rig.StopChunkserver, func() {
			if err := rig.StartChunkserver(); err != nil {
				t.Fatal(err)
			}
		})
		if r.code != 0 {
			oneClearError(t, "a sync that lost the chunkserver for 10 s", r)
		}
		id := other.sync()
		checkConverged(t, id, mods, f, other)
	})

	t.Run("host-dies-holding-the-lock", func(t *testing.T) {
		spare, err := rig.AddClient(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		vols := mooseVolume(t, spare, cs[1])
		f := newFixture(t, vols[0])
		ws := f.add(synthstack.Small("mdead", 6, 12)...)
		f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(ws...)}}, f.entries("core", ws...))
		slowDownloads(t, f, ws, time.Second)
		const ttl = 15 * time.Second
		f.env = append(f.env, "VOLBOOT_LOCK_TTL="+ttl.String())
		other := f.on(vols[1])

		doomed := f.command("sync")
		doomed.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := doomed.Start(); err != nil {
			t.Fatal(err)
		}
		waitHolder(t, f.vol, 1, 30*time.Second)
		time.Sleep(time.Second)
		// The host dies: its processes and its mount at once. Its flock
		// stays with its session at the master.
		syscall.Kill(-doomed.Process.Pid, syscall.SIGKILL)
		spare.Kill()
		doomed.Wait()
		t0 := time.Now()
		id := other.sync()
		t.Logf("after the host died, the other host's sync took %s (TTL %s)", time.Since(t0).Round(time.Millisecond), ttl)
		// A later sync that needs the lock (a new manifest) must not pay
		// the TTL again for the dead host's lingering flock.
		later := other.on(vols[1])
		later.work = t.TempDir()
		v2 := f.add(synthstack.Spec{Name: "mdead-05", Version: "2.0", PyFiles: 2})[0]
		next := append(append([]synthstack.Wheel(nil), ws[:5]...), v2)
		later.write([]synthstack.Group{{Name: "core", Required: true, Requirements: requirements(next...)}}, later.entries("core", next...))
		t0 = time.Now()
		r := later.run("sync")
		if r.code != 0 {
			t.Fatalf("a later sync: exit %d\n%s", r.code, r.stderr)
		}
		if d := time.Since(t0); d >= ttl {
			t.Errorf("a later sync took %s: it waited the TTL (%s) for the dead host's lingering flock\n%s", d, ttl, r.stderr)
		}
		var mods []string
		for _, w := range ws {
			mods = append(mods, w.Spec.Module())
		}
		checkConverged(t, id, mods, other)
	})
}

// TestMooseFSGCKillLoop: gc killed at random moments on MooseFS, where
// each removal costs round trips (see gcKillLoop).
func TestMooseFSGCKillLoop(t *testing.T) {
	rig := mooseRig(t)
	q := newQuota(10, 4, time.Minute) // CI's share of time; VOLBOOT_LONG_TESTS=1 for the full loop
	if os.Getenv("VOLBOOT_LONG_TESTS") != "" {
		q.want = 50
	}
	gcKillLoop(t, newFixture(t, mooseVolume(t, rig.Clients()[0])[0]), 20, q)
}

// TestMooseFSGCRunRace: run through one client races gc through the other
// (two hosts, each with its own directory cache; see gcRunRace).
func TestMooseFSGCRunRace(t *testing.T) {
	rig := mooseRig(t)
	cs := rig.Clients()
	vols := mooseVolume(t, cs[0], cs[1])
	fa := newFixture(t, vols[0])
	// gc's lock and first look at the leases take round trips: start it
	// up to 150 ms first, so that run chooses the generation around then.
	q := newQuota(12, 6, 45*time.Second) // CI's share of time; VOLBOOT_LONG_TESTS=1 for the full loop
	if os.Getenv("VOLBOOT_LONG_TESTS") != "" {
		q.want = 200
	}
	gcRunRace(t, fa, func(f *fixture) *fixture { return f.on(vols[1]) }, 150*time.Millisecond, q)
}

// TestMooseFSRepairUnderLoad: repair under a polling handler on MooseFS,
// which cannot exchange two directories (RENAME_EXCHANGE is EINVAL there):
// the rebuilt generation is merged into the old one file by file, and the
// handler still never finds a file missing.
func TestMooseFSRepairUnderLoad(t *testing.T) {
	rig := mooseRig(t)
	repairUnderLoad(t, newFixture(t, mooseVolume(t, rig.Clients()[0])[0]), 3)
}

// TestMooseFSCloseIsDurable holds --durability close (the default on
// MooseFS) to what it relies on: a file whose close(2) returned is on the
// chunkservers, with no fsync. A host writes files of many sizes over many
// directories, closes them, and dies at once (its mfsmount SIGKILLed,
// anything it still buffered lost); another host then reads every file
// whole. It also checks that auto picks close on this mount.
func TestMooseFSCloseIsDurable(t *testing.T) {
	rig := mooseRig(t)
	spare, err := rig.AddClient(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vols := mooseVolume(t, spare, rig.Clients()[1])
	if got := wheel.SyncAuto.Resolve(vols[0]); got != wheel.SyncClose {
		t.Errorf("durability auto on MooseFS resolves to %v, want close", got)
	}
	want := map[string][]byte{}
	rnd := mrand.New(mrand.NewPCG(1, 2))
	for i := range 240 {
		size := []int{0, 1, 700, 4096, 65536, 200 << 10, 1 << 20, 3 << 20}[i%8]
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rnd.Uint32())
		}
		want[fmt.Sprintf("d%02d/f%03d", i%16, i)] = b
	}
	for d := range 16 {
		if err := os.Mkdir(filepath.Join(vols[0], fmt.Sprintf("d%02d", d)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	g := fileops.New(32, 2).Group(context.Background())
	for name, b := range want {
		g.Go(path.Dir(name), func() error {
			// os.WriteFile: create, write, close; never fsync.
			return os.WriteFile(filepath.Join(vols[0], name), b, 0o644)
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	spare.Kill() // the host dies the moment its last close returned
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(vols[1], name))
		if err != nil {
			t.Errorf("%s, closed before its host died, reads from another host as: %v", name, err)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s, closed before its host died: %d bytes from another host, %d written", name, len(got), len(b))
		}
	}
}
