package lockfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// TestContention16 runs 16 processes that each take the lock 3 times and,
// while holding it, bump a shared sequence and log enter/leave lines. Any
// overlap shows as interleaved lines, a repeated sequence number or a lost
// update of the sequence file.
func TestContention16(t *testing.T) {
	for _, mode := range []Mode{ModeFlock, ModeLeaseOnly} {
		t.Run(string(mode), func(t *testing.T) {
			const procs, iter = 16, 2
			dir := t.TempDir()
			logPath := filepath.Join(dir, "log")
			seqPath := filepath.Join(dir, "seq")
			env := map[string]string{
				"LF_DIR": filepath.Join(dir, ".volboot"), "LF_MODE": string(mode),
				"LF_LOG": logPath, "LF_RES": seqPath, "LF_ITER": strconv.Itoa(iter),
				"LF_TTL": "20s", "LF_HB": "500ms", "LF_POLLMIN": "5ms", "LF_POLLMAX": "40ms",
			}
			ps := make([]*proc, procs)
			for i := range ps {
				ps[i] = startHelper(t, fmt.Sprintf("contender %d", i), "contend", env)
			}
			for _, p := range ps {
				if code := p.wait(45 * time.Second); code != 0 {
					t.Fatalf("%s exited with %d", p.name, code)
				}
			}
			data, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			if len(lines) != 2*procs*iter {
				t.Fatalf("log has %d lines, want %d", len(lines), 2*procs*iter)
			}
			perPID := map[string]int{}
			var lastEpoch uint64
			for i := 0; i < len(lines); i += 2 {
				enter, leave := strings.Fields(lines[i]), strings.Fields(lines[i+1])
				seq := strconv.Itoa(i/2 + 1)
				if len(enter) != 4 || len(leave) != 4 || enter[0] != "enter" || leave[0] != "leave" ||
					enter[1] != leave[1] || enter[2] != seq || leave[2] != seq || enter[3] != leave[3] {
					t.Fatalf("overlap or lost update at lines %d-%d:\n%s\n%s", i+1, i+2, lines[i], lines[i+1])
				}
				epoch, _ := strconv.ParseUint(enter[3], 10, 64)
				if epoch <= lastEpoch {
					t.Fatalf("epoch did not grow at line %d: %d after %d", i+1, epoch, lastEpoch)
				}
				lastEpoch = epoch
				perPID[enter[1]]++
			}
			if len(perPID) != procs {
				t.Fatalf("%d distinct holders, want %d", len(perPID), procs)
			}
			if b, _ := os.ReadFile(seqPath); string(b) != strconv.Itoa(procs*iter) {
				t.Fatalf("sequence file holds %q, want %d", b, procs*iter)
			}
			st, err := ReadHolder(filepath.Join(dir, ".volboot"))
			if err != nil || st.Holder == nil || !st.Released || st.Epoch != lastEpoch {
				t.Fatalf("final holder status %+v, %v; want released at epoch %d", st, err, lastEpoch)
			}
		})
	}
}

// holderEnv is the environment of a "hold" helper.
func holderEnv(dir string, mode Mode, extra ...string) map[string]string {
	env := map[string]string{
		"LF_DIR": filepath.Join(dir, ".volboot"), "LF_MODE": string(mode), "LF_RES": filepath.Join(dir, "resource"),
		"LF_TTL": "10s", "LF_HB": "100ms", "LF_POLLMIN": "20ms", "LF_POLLMAX": "100ms",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

// TestKillHolderFlock: with flock working, the kernel drops a killed
// holder's flock and a waiter takes over at its next poll.
func TestKillHolderFlock(t *testing.T) {
	dir := t.TempDir()
	a := startHelper(t, "holder A", "hold", holderEnv(dir, ModeFlock, "LF_HOST", "host-a"))
	a.expect("acquired 1 ", 20*time.Second)
	b := startHelper(t, "waiter B", "hold", holderEnv(dir, ModeFlock, "LF_HOST", "host-b"))
	b.waitStderr("waiting for the volume lock", 20*time.Second)
	a.signal(syscall.SIGKILL)
	t0 := time.Now()
	b.expect("acquired 2 ", 10*time.Second)
	took := time.Since(t0)
	t.Logf("flock takeover %s after kill -9 (poll max 100ms)", took)
	if took > 3*time.Second { // generous: the machine is shared; the TTL is 10s
		t.Fatalf("takeover took %s, want about one poll", took)
	}
	b.waitStderr("flock is free, so its previous holder is gone", 5*time.Second)
}

// TestKillHolderLeaseOnlyTTL: in lease-only mode a killed holder on another
// host is taken over once its record stays unchanged for the TTL, and not
// before; a dead holder on this host is taken over at once.
func TestKillHolderLeaseOnlyTTL(t *testing.T) {
	const ttl, hb, poll = 2 * time.Second, 100 * time.Millisecond, 100 * time.Millisecond
	dir := t.TempDir()
	a := startHelper(t, "holder A", "hold", holderEnv(dir, ModeLeaseOnly, "LF_HOST", "host-a", "LF_TTL", ttl.String()))
	a.expect("acquired 1 ", 20*time.Second)
	b := startHelper(t, "waiter B", "hold", holderEnv(dir, ModeLeaseOnly, "LF_TTL", ttl.String()))
	b.waitStderr("waiting for the volume lock", 20*time.Second)
	time.Sleep(300 * time.Millisecond) // several heartbeats seen by B
	a.signal(syscall.SIGKILL)
	t0 := time.Now()
	b.expect("acquired 2 ", 10*time.Second)
	took := time.Since(t0)
	t.Logf("lease-only takeover %s after kill -9 (TTL %s, heartbeat %s, poll max %s)", took, ttl, hb, poll)
	// B's TTL runs from the last change it saw, at most a heartbeat (plus
	// any stall of A on this shared machine) before the kill.
	if took < ttl/2 {
		t.Fatalf("takeover after %s: before the TTL %s ran out", took, ttl)
	}
	if took > ttl+2*poll+1500*time.Millisecond {
		t.Fatalf("takeover after %s: want within TTL %s plus a poll", took, ttl)
	}
	b.waitStderr("holder record has not changed for", 5*time.Second)
}

func TestKillHolderLeaseOnlySameHost(t *testing.T) {
	dir := t.TempDir()
	a := startHelper(t, "holder A", "hold", holderEnv(dir, ModeLeaseOnly, "LF_TTL", "30s"))
	a.expect("acquired 1 ", 20*time.Second)
	b := startHelper(t, "waiter B", "hold", holderEnv(dir, ModeLeaseOnly, "LF_TTL", "30s"))
	b.waitStderr("waiting for the volume lock", 20*time.Second)
	a.signal(syscall.SIGKILL)
	t0 := time.Now()
	b.expect("acquired 2 ", 10*time.Second)
	took := time.Since(t0)
	t.Logf("same-host dead-pid takeover %s after kill -9 (TTL 30s)", took)
	if took > 3*time.Second {
		t.Fatalf("takeover took %s, want at once", took)
	}
	b.waitStderr("holder is dead: ", 5*time.Second)
}

// TestPausedHolderFenced: a holder stopped past the TTL loses the lock to a
// waiter; resumed, it learns of the fencing at its next heartbeat, writes
// neither the holder record nor the protected resource again, and refuses
// the next write with ErrFenced. In flock mode the stopped holder keeps its
// flock, so the waiter meets the "lingering lock" rule and takes over
// without flock.
func TestPausedHolderFenced(t *testing.T) {
	for _, mode := range []Mode{ModeLeaseOnly, ModeFlock} {
		t.Run(string(mode), func(t *testing.T) { testPausedHolderFenced(t, mode) })
	}
}

func testPausedHolderFenced(t *testing.T, mode Mode) {
	const ttl = 2 * time.Second
	dir := t.TempDir()
	vb := filepath.Join(dir, ".volboot")
	res := filepath.Join(dir, "resource")
	a := startHelper(t, "holder A", "hold", holderEnv(dir, mode, "LF_HOST", "host-a", "LF_TTL", ttl.String()))
	a.expect("acquired 1 ", 20*time.Second)
	a.write("phase building generation")
	a.expect("ok", 5*time.Second)
	a.write("w")
	a.expect("wrote 1", 5*time.Second)

	b := startHelper(t, "waiter B", "hold", holderEnv(dir, mode, "LF_HOST", "host-b", "LF_TTL", ttl.String()))
	b.waitStderr("waiting for the volume lock", 20*time.Second)
	a.signal(syscall.SIGSTOP)
	b.expect("acquired 2 ", 10*time.Second)
	if mode == ModeFlock {
		b.waitStderr("a dead client's lock may linger", 5*time.Second)
	}
	b.write("w")
	b.expect("wrote 1", 5*time.Second)

	// Watch holder.json while A resumes: every read must parse and none
	// may show A's epoch again.
	var stopWatch atomic.Bool
	var watchErr error
	var reads int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stopWatch.Load() {
			st, err := ReadHolder(vb)
			reads++
			if err == nil && (st.Holder == nil || !st.FromHolderFile) {
				err = fmt.Errorf("no holder record: %+v", st)
			}
			if err == nil && st.Holder.Epoch != 2 {
				err = fmt.Errorf("holder.json rewritten with epoch %d by %s after the takeover", st.Holder.Epoch, st.Holder.Host)
			}
			if err != nil {
				watchErr = err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	a.signal(syscall.SIGCONT)
	lost := a.expect("lost ", 5*time.Second)
	if !strings.Contains(lost, "fenced") {
		t.Fatalf("A reported %q, want fencing", lost)
	}
	time.Sleep(300 * time.Millisecond) // several of A's heartbeat periods
	a.write("w")
	refused := a.expect("refused ", 5*time.Second)
	if !strings.Contains(refused, "epoch 2 was claimed after ours (1)") {
		t.Fatalf("A: %q", refused)
	}
	if code := a.wait(5 * time.Second); code != 3 {
		t.Fatalf("A exited with %d, want 3 (fenced)", code)
	}
	b.write("w")
	b.expect("wrote 2", 5*time.Second)
	stopWatch.Store(true)
	wg.Wait()
	if watchErr != nil {
		t.Fatal(watchErr)
	}
	t.Logf("%d concurrent reads of holder.json while A resumed", reads)
	b.write("release")
	b.expect("released <nil>", 5*time.Second)

	data, err := os.ReadFile(res)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("write %d 1 1\nwrite %d 2 1\nwrite %d 2 2\n", a.pid(), b.pid(), b.pid())
	if string(data) != want {
		t.Fatalf("protected resource:\n%s\nwant:\n%s", data, want)
	}
	if strings.Contains(a.stderr.String(), "released the volume lock") {
		t.Fatalf("fenced holder claims to have released")
	}
}

// TestWaitingLogAndTimeout: a waiter logs whom it waits for (host, pid,
// phase) every LogEvery, and gives up after WaitTimeout with an error that
// names the holder and says what to do.
func TestWaitingLogAndTimeout(t *testing.T) {
	dir := t.TempDir()
	const phase = "downloading torch-2.8.0 (45%)"
	a := startHelper(t, "holder A", "hold", holderEnv(dir, ModeFlock, "LF_HOST", "gpu-worker-7", "LF_PHASE", phase))
	a.expect("acquired 1 ", 20*time.Second)

	core, logs := observer.New(zap.InfoLevel)
	start := time.Now()
	_, err := Acquire(context.Background(), Options{
		Dir: filepath.Join(dir, ".volboot"), Logger: zap.New(core),
		WaitTimeout: 1500 * time.Millisecond, LogEvery: 300 * time.Millisecond,
		PollMin: 20 * time.Millisecond, PollMax: 100 * time.Millisecond,
	})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Acquire: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d < 1500*time.Millisecond || d > 5*time.Second {
		t.Fatalf("timed out after %s, want 1.5s", d)
	}
	for _, s := range []string{"gpu-worker-7", "pid " + strconv.Itoa(a.pid()), phase, "--lock-timeout"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("timeout error does not mention %q: %v", s, err)
		}
	}
	waits := logs.FilterMessage("waiting for the volume lock").All()
	if len(waits) < 3 || len(waits) > 7 {
		t.Fatalf("%d waiting log lines in 1.5s at one per 300ms", len(waits))
	}
	f := waits[len(waits)-1].ContextMap()
	if f["holder_host"] != "gpu-worker-7" || f["holder_pid"] != int64(a.pid()) || f["holder_phase"] != phase {
		t.Fatalf("waiting log fields: %v", f)
	}
	if _, ok := f["holder_id"]; !ok {
		t.Fatalf("waiting log lacks holder_id: %v", f)
	}
	a.write("release")
	a.expect("released <nil>", 5*time.Second)
}

// TestConcurrentReadsParse reads the holder record and the leases while a
// process rewrites both every millisecond: no read may see a torn record.
func TestConcurrentReadsParse(t *testing.T) {
	dir := t.TempDir()
	vb := filepath.Join(dir, ".volboot")
	c := startHelper(t, "churn", "churn", holderEnv(dir, ModeFlock))
	c.expect("acquired 1", 20*time.Second)
	start := time.Now()
	var holders, leases int
	phases := map[string]bool{}
	for d := time.Since(start); d < time.Second || len(phases) < 10 && d < 10*time.Second; d = time.Since(start) {
		st, err := ReadHolder(vb)
		if err != nil || st.Holder == nil || st.Err != nil {
			t.Fatalf("read %d: %+v, %v", holders, st, err)
		}
		phases[st.Holder.Phase] = true
		holders++
		es, err := ListLeases(vb, ListOptions{TTL: 10 * time.Second})
		if err != nil || len(es) != 1 || es[0].Err != nil || !es[0].Live || es[0].Record.Generation != "g1" {
			t.Fatalf("lease read %d: %+v, %v", leases, es, err)
		}
		leases++
	}
	c.stdin.Close()
	if code := c.wait(10 * time.Second); code != 0 {
		t.Fatalf("churn exited %d", code)
	}
	if len(phases) < 10 {
		t.Fatalf("only %d distinct phases seen in %d reads: the writer did not churn", len(phases), holders)
	}
	t.Logf("%d holder reads (%d distinct records), %d lease listings, all parsed", holders, len(phases), leases)
}

// TestLeaseProcesses: a killed lease holder on another host stays live until
// its file is older than the TTL by the volume's clock; one on this host is
// dead at once.
func TestLeaseProcesses(t *testing.T) {
	dir := t.TempDir()
	vb := filepath.Join(dir, ".volboot")
	far := startHelper(t, "far lease", "lease", map[string]string{"LF_DIR": vb, "LF_WORKER": "far-1", "LF_GEN": "gen-a", "LF_HOST": "host-far"})
	near := startHelper(t, "near lease", "lease", map[string]string{"LF_DIR": vb, "LF_WORKER": "near-1", "LF_GEN": "gen-b"})
	far.expect("leased", 20*time.Second)
	near.expect("leased", 20*time.Second)
	const ttl = 2 * time.Second
	live, err := ListLive(vb, ListOptions{TTL: ttl})
	if err != nil || len(live) != 2 || live[0].Record.Generation != "gen-a" || live[1].Record.Generation != "gen-b" {
		t.Fatalf("ListLive: %+v, %v", live, err)
	}
	time.Sleep(ttl + 500*time.Millisecond) // still refreshed, still live
	if live, _ := ListLive(vb, ListOptions{TTL: ttl}); len(live) != 2 {
		t.Fatalf("after %s: %+v", ttl, live)
	}
	far.signal(syscall.SIGKILL)
	near.signal(syscall.SIGKILL)
	far.wait(5 * time.Second)
	near.wait(5 * time.Second)
	all, err := ListLeases(vb, ListOptions{TTL: ttl})
	if err != nil || len(all) != 2 || !all[0].Live || all[1].Live || !strings.Contains(all[1].Reason, "no longer exists on this host") {
		t.Fatalf("right after kill: %+v, %v; want far-1 live, near-1 dead at once", all, err)
	}
	time.Sleep(ttl + 200*time.Millisecond)
	all, err = ListLeases(vb, ListOptions{TTL: ttl})
	if err != nil || len(all) != 2 || all[0].Live || all[1].Live {
		t.Fatalf("after TTL: %+v, %v; want both dead", all, err)
	}
	if !strings.Contains(all[0].Reason, "not refreshed") || !strings.Contains(all[1].Reason, "dead: ") {
		t.Fatalf("reasons: %q, %q", all[0].Reason, all[1].Reason)
	}
}

// TestSimultaneousTakeover: eight lease-only waiters watch one holder whose
// record stops changing at one moment, so all judge it stale within a poll
// of each other and race to claim the next epoch: exactly one wins, the
// others see the new holder alive and keep waiting.
func TestSimultaneousTakeover(t *testing.T) {
	const n, ttl = 8, 1500 * time.Millisecond
	dir := t.TempDir()
	vb := filepath.Join(dir, ".volboot")
	h := Holder{Schema: 1, HolderID: "vanishing", Identity: Identity{Host: "far-host", PID: 4242}, Mode: ModeLeaseOnly,
		Epoch: 1, Started: time.Now().UTC(), Updated: time.Now().UTC(), Phase: "about to vanish"}
	if err := os.MkdirAll(filepath.Join(vb, "claims"), 0o755); err != nil {
		t.Fatal(err)
	}
	beat := func() {
		h.Heartbeat++
		data, _ := marshalRecord(h)
		if h.Heartbeat == 1 {
			if won, err := (claimDir{dir: filepath.Join(vb, "claims")}).create(1, data); !won || err != nil {
				t.Fatal(won, err)
			}
		}
		if err := atomicfile.Write(filepath.Join(vb, "holder.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	beat()
	ws := make([]*proc, n)
	for i := range ws {
		ws[i] = startHelper(t, fmt.Sprintf("waiter %d", i), "hold",
			holderEnv(dir, ModeLeaseOnly, "LF_TTL", ttl.String(), "LF_POLLMIN", "2ms", "LF_POLLMAX", "5ms", "LF_HB", "100ms"))
	}
	for _, w := range ws {
		for !strings.Contains(w.stderr.String(), "waiting for the volume lock") {
			beat()
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := 0; i < 5; i++ { // a few more beats that every waiter sees
		beat()
		time.Sleep(100 * time.Millisecond)
	}
	// The holder vanishes now. Collect who acquires in the next 2 TTLs.
	var winners []int
	deadline := time.After(2 * ttl)
	merged := make(chan int, n)
	for i, w := range ws {
		go func() {
			for l := range w.lines {
				if strings.HasPrefix(l, "acquired ") {
					merged <- i
				}
			}
		}()
	}
collect:
	for {
		select {
		case i := <-merged:
			winners = append(winners, i)
		case <-deadline:
			break collect
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d waiters believe they hold the lock: %v", len(winners), winners)
	}
	lost := 0
	for _, w := range ws {
		if strings.Contains(w.stderr.String(), "another worker claimed the volume lock first") {
			lost++
		}
	}
	st, err := ReadHolder(vb)
	if err != nil || st.Epoch != 2 || st.Holder == nil || st.Holder.PID != ws[winners[0]].pid() {
		t.Fatalf("holder after the race: %+v %v", st, err)
	}
	t.Logf("waiter %d won epoch 2; %d others lost the claim race on claims/2 and went back to waiting", winners[0], lost)
}
