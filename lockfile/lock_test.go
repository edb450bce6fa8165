package lockfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gofrs/flock"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// fakeClock is a Clock that moves only when the test says so.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	changed chan struct{}
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), changed: make(chan struct{}, 1)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return ch
}

// drive moves the clock from timer to timer (each time at least one is
// pending) until the Acquire running behind ch returns; each, if not nil,
// runs after every step.
func (c *fakeClock) drive(t *testing.T, ch <-chan acquireResult, each func()) acquireResult {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		if len(c.waiters) > 0 {
			next := c.waiters[0].at
			for _, w := range c.waiters {
				if w.at.Before(next) {
					next = w.at
				}
			}
			if next.After(c.now) {
				c.now = next
			}
			kept := c.waiters[:0]
			for _, w := range c.waiters {
				if !w.at.After(c.now) {
					w.ch <- c.now
				} else {
					kept = append(kept, w)
				}
			}
			c.waiters = kept
			c.mu.Unlock()
			if each != nil {
				each()
			}
			continue
		}
		c.mu.Unlock()
		select {
		case r := <-ch:
			return r
		case <-c.changed:
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("fake clock: Acquire neither returned nor waited on a timer")
		}
	}
}

// writeHolder plays a holder at epoch by writing its claim and record.
func writeHolder(t *testing.T, dir string, h Holder) {
	t.Helper()
	c := claimDir{dir: filepath.Join(dir, "claims")}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := marshalRecord(h)
	if err != nil {
		t.Fatal(err)
	}
	if won, err := c.create(h.Epoch, data); err != nil || !won {
		t.Fatalf("claim %d: %v %v", h.Epoch, won, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "holder.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func farHolder(epoch uint64) Holder {
	return Holder{Schema: 1, HolderID: "far-holder", Identity: Identity{Host: "far-host", PID: 4242, BootID: "b", PIDNamespace: "pid:[1]"},
		Mode: ModeLeaseOnly, Epoch: epoch, Started: time.Unix(1e9, 0).UTC(), Updated: time.Unix(1e9, 0).UTC(),
		Heartbeat: 3, Phase: "unpacking torch"}
}

type acquireResult struct {
	l   *Lock
	err error
	at  time.Time
}

func acquireAsync(ctx context.Context, o Options) chan acquireResult {
	ch := make(chan acquireResult, 1)
	go func() {
		l, err := Acquire(ctx, o)
		r := acquireResult{l: l, err: err}
		switch {
		case l != nil:
			// The claim time: the clock may move on for the heartbeat
			// before we get here.
			l.mu.Lock()
			r.at = l.rec.Started
			l.mu.Unlock()
		case o.Clock != nil:
			r.at = o.Clock.Now()
		}
		ch <- r
	}()
	return ch
}

// TestStaleTakeoverFakeClock: a holder whose record never changes is taken
// over once the TTL has passed on the waiter's clock, not before; the
// record's own timestamps (far in the past) play no part.
func TestStaleTakeoverFakeClock(t *testing.T) {
	dir := t.TempDir()
	writeHolder(t, dir, farHolder(1))
	clk := newFakeClock()
	start := clk.Now()
	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := acquireAsync(ctx, Options{Dir: dir, Mode: ModeLeaseOnly, Clock: clk, Logger: zap.New(core)})
	r := clk.drive(t, ch, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.l.Release()
	waited := r.at.Sub(start)
	if waited < DefaultTTL || waited > DefaultTTL+DefaultPollMax*5/4 {
		t.Fatalf("took over after %s on the fake clock, want TTL %s plus at most one poll", waited, DefaultTTL)
	}
	if r.l.Epoch() != 2 {
		t.Fatalf("epoch %d", r.l.Epoch())
	}
	if reason, prev := r.l.Takeover(); prev == nil || prev.HolderID != "far-holder" || !strings.Contains(reason, "TTL") {
		t.Fatalf("Takeover() = %q, %+v", reason, prev)
	}
	tk := logs.FilterMessage("took over the volume lock").All()
	if len(tk) != 1 || tk[0].Level != zap.WarnLevel || !strings.Contains(tk[0].ContextMap()["reason"].(string), "has not changed for 1m") {
		t.Fatalf("takeover log: %+v", tk)
	}
	if f := tk[0].ContextMap(); f["previous_host"] != "far-host" || f["previous_pid"] != int64(4242) || f["previous_phase"] != "unpacking torch" || f["epoch"] != uint64(2) {
		t.Fatalf("takeover log fields: %v", f)
	}
	if n := len(logs.FilterMessage("waiting for the volume lock").All()); n < 6 || n > 8 {
		t.Fatalf("%d waiting log lines over 60s at one per 10s", n)
	}
}

// TestChangingHolderIsNotStale: a record that keeps changing is never stale,
// and the wait ends with ErrTimeout after WaitTimeout.
func TestChangingHolderIsNotStale(t *testing.T) {
	dir := t.TempDir()
	h := farHolder(1)
	writeHolder(t, dir, h)
	clk := newFakeClock()
	start := clk.Now()
	ch := acquireAsync(context.Background(), Options{Dir: dir, Mode: ModeLeaseOnly, Clock: clk, TTL: 20 * time.Second, WaitTimeout: 2 * time.Minute})
	r := clk.drive(t, ch, func() {
		h.Heartbeat++
		data, _ := marshalRecord(h)
		if err := atomicfile.Write(filepath.Join(dir, "holder.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if !errors.Is(r.err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", r.err)
	}
	if w := r.at.Sub(start); w < 2*time.Minute || w > 2*time.Minute+time.Second {
		t.Fatalf("timed out after %s", w)
	}
	for _, s := range []string{"far-host", "pid 4242", "unpacking torch", "--lock-timeout"} {
		if !strings.Contains(r.err.Error(), s) {
			t.Errorf("error lacks %q: %v", s, r.err)
		}
	}
}

// exitedPID returns the pid of a process that has exited and been reaped.
func exitedPID(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no true(1):", err)
	}
	return cmd.Process.Pid
}

func TestDeadHolderSameMachine(t *testing.T) {
	me := LocalIdentity()
	if me.BootID == "" || me.PIDNamespace == "" || me.PIDStart == 0 {
		t.Skip("no /proc to identify processes")
	}
	quick := Options{Mode: ModeLeaseOnly, WaitTimeout: 300 * time.Millisecond, PollMin: 10 * time.Millisecond, PollMax: 50 * time.Millisecond}
	cases := []struct {
		name string
		id   Identity
		dead bool
	}{
		{"exited pid", Identity{Host: me.Host, PID: exitedPID(t), PIDStart: 1, BootID: me.BootID, PIDNamespace: me.PIDNamespace}, true},
		{"own pid reused", Identity{Host: me.Host, PID: me.PID, PIDStart: me.PIDStart + 1, BootID: me.BootID, PIDNamespace: me.PIDNamespace}, true},
		{"own pid, this process", me, false},
		{"other boot", Identity{Host: me.Host, PID: exitedPID(t), BootID: "another-boot", PIDNamespace: me.PIDNamespace}, false},
		{"other pid namespace", Identity{Host: me.Host, PID: exitedPID(t), BootID: me.BootID, PIDNamespace: "pid:[1]"}, false},
		{"other host", Identity{Host: "elsewhere", PID: exitedPID(t), BootID: me.BootID, PIDNamespace: me.PIDNamespace}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := farHolder(1)
			h.Identity = tc.id
			writeHolder(t, dir, h)
			o := quick
			o.Dir = dir
			l, err := Acquire(context.Background(), o)
			if tc.dead {
				if err != nil {
					t.Fatalf("dead holder not taken over at once: %v", err)
				}
				l.Release()
			} else if !errors.Is(err, ErrTimeout) {
				t.Fatalf("live or unknowable holder taken over: %v", err)
			}
		})
	}
	// A zombie holds nothing either.
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer cmd.Wait()
	for i := 0; i < 200; i++ {
		if st, err := readProcStat(strconv.Itoa(cmd.Process.Pid)); err == nil && st.state == 'Z' {
			id := me
			id.PID, id.PIDStart = cmd.Process.Pid, st.start
			if gone, why := processGone(id, me); !gone || !strings.Contains(why, "zombie") {
				t.Fatalf("zombie: %v %q", gone, why)
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("child never became a zombie")
}

// TestReleaseHandsOver: a released lock is free at once in both modes, the
// record says released, and epochs grow.
func TestReleaseHandsOver(t *testing.T) {
	for _, mode := range []Mode{ModeFlock, ModeLeaseOnly} {
		t.Run(string(mode), func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Dir: dir, Mode: mode, WaitTimeout: 2 * time.Second, Phase: "planning"}
			for want := uint64(1); want <= 5; want++ {
				l, err := Acquire(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				if reason, prev := l.Takeover(); reason != "" || prev != nil {
					t.Fatalf("a handover reported as takeover: %q", reason)
				}
				if l.Epoch() != want || l.Mode() != mode {
					t.Fatalf("epoch %d mode %s, want %d %s", l.Epoch(), l.Mode(), want, mode)
				}
				st, err := ReadHolder(dir)
				if err != nil || st.Holder == nil || st.Released || st.Holder.HolderID != l.HolderID() || st.Holder.Phase != "planning" || st.Holder.HasFlock != (mode == ModeFlock) {
					t.Fatalf("while held: %+v %v", st, err)
				}
				if err := l.Release(); err != nil {
					t.Fatal(err)
				}
				if err := l.Release(); err != nil {
					t.Fatalf("second Release: %v", err)
				}
				if !errors.Is(l.Check(), ErrReleased) {
					t.Fatalf("Check after Release: %v", l.Check())
				}
				st, _ = ReadHolder(dir)
				if !st.Released || st.Epoch != want {
					t.Fatalf("after release: %+v", st)
				}
			}
			es, _ := claimDir{dir: filepath.Join(dir, "claims")}.epochs()
			if len(es) != claimsKept || es[0] != 5-claimsKept+1 {
				t.Fatalf("claims kept: %v", es)
			}
		})
	}
}

// TestPhaseReachesRecord: SetPhase text shows up at the next heartbeat,
// cleaned of control characters.
func TestPhaseReachesRecord(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(context.Background(), Options{Dir: dir, TTL: time.Second, Heartbeat: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	l.SetPhase("downloading torch-2.8.0 (45%)\x1b[2K\n")
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, err := ReadHolder(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.Holder.Phase == "downloading torch-2.8.0 (45%) [2K " {
			if st.Holder.Heartbeat < 2 {
				t.Fatalf("heartbeat counter %d", st.Holder.Heartbeat)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("phase never reached the record: %q", st.Holder.Phase)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPhaseWrittenPromptly: a new phase reaches the record within about
// PhaseEvery, not at the next heartbeat (a minute here), and a burst of
// phases costs one write per PhaseEvery, the last one winning. Status and
// waiters showed "planning" for the whole download before (issue 15, 7).
func TestPhaseWrittenPromptly(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(context.Background(), Options{Dir: dir, TTL: 10 * time.Minute, Heartbeat: time.Minute, Phase: "planning"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	wait := func(want string) uint64 {
		t.Helper()
		deadline := time.Now().Add(PhaseEvery + 2*time.Second)
		for {
			st, err := ReadHolder(dir)
			if err != nil {
				t.Fatal(err)
			}
			if st.Holder.Phase == want {
				return st.Holder.Heartbeat
			}
			if time.Now().After(deadline) {
				t.Fatalf("phase %q not in the record %s after it was set (it says %q)", want, PhaseEvery+2*time.Second, st.Holder.Phase)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	first := wait("planning")
	l.SetPhase("downloading")
	wait("downloading")
	began := time.Now()
	for i := 0; i < 50; i++ {
		l.SetPhase(fmt.Sprintf("unpacking %d wheels", 50-i))
		time.Sleep(2 * time.Millisecond)
	}
	last := wait("unpacking 1 wheels")
	// One write for "downloading", then at most one per PhaseEvery while
	// the burst and the wait lasted, plus the one that carries the last.
	if max := first + 2 + uint64(time.Since(began)/PhaseEvery) + 1; last > max {
		t.Fatalf("heartbeat counter %d after a burst of 50 phases, want at most %d: phases are not rate-limited", last, max)
	}
}

// TestFencedInProcess: when a newer epoch appears, the holder learns of it
// at its next heartbeat, stops writing its record, and every later call
// reports ErrFenced.
func TestFencedInProcess(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(context.Background(), Options{Dir: dir, Mode: ModeLeaseOnly, TTL: time.Second, Heartbeat: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}
	work, cancel := l.Context(context.Background())
	defer cancel()
	writeHolder(t, dir, farHolder(2))
	before, _ := os.ReadFile(filepath.Join(dir, "holder.json"))
	select {
	case <-work.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("fencing not detected")
	}
	if !errors.Is(l.Err(), ErrFenced) || !errors.Is(l.Check(), ErrFenced) || !errors.Is(context.Cause(work), ErrFenced) {
		t.Fatalf("Err %v, Check %v", l.Err(), l.Check())
	}
	time.Sleep(100 * time.Millisecond)
	if err := l.Release(); !errors.Is(err, ErrFenced) {
		t.Fatalf("Release: %v, want ErrFenced", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "holder.json"))
	if string(before) != string(after) {
		t.Fatalf("fenced holder rewrote holder.json:\n%s", after)
	}
	// A Check before the heartbeat notices also fences.
	dir2 := t.TempDir()
	l2, err := Acquire(context.Background(), Options{Dir: dir2, Mode: ModeLeaseOnly, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	writeHolder(t, dir2, farHolder(2))
	if err := l2.Check(); !errors.Is(err, ErrFenced) {
		t.Fatalf("Check: %v", err)
	}
	select {
	case <-l2.Lost():
	default:
		t.Fatal("Lost not closed by Check")
	}
	l2.Release()
}

// TestClaimRace: many claimers of one epoch, exactly one wins each time.
func TestClaimRace(t *testing.T) {
	c := claimDir{dir: t.TempDir()}
	for epoch := uint64(1); epoch <= 30; epoch++ {
		var wins sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := 0; i < 16; i++ {
			wins.Add(1)
			go func() {
				defer wins.Done()
				ok, err := c.create(epoch, []byte("x"))
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					won++
					mu.Unlock()
				}
			}()
		}
		wins.Wait()
		if won != 1 {
			t.Fatalf("epoch %d: %d winners", epoch, won)
		}
	}
	ents, _ := os.ReadDir(c.dir)
	if len(ents) != 30 {
		t.Fatalf("%d entries: temporary files left behind?", len(ents))
	}
}

// TestVoidClaim: re-creating a removed old claim name does not make its
// creator a holder, because a newer epoch exists.
func TestVoidClaim(t *testing.T) {
	dir := t.TempDir()
	writeHolder(t, dir, farHolder(7))
	w := &waiter{o: Options{Dir: dir, Logger: zap.NewNop(), Clock: systemClock{}, Identity: LocalIdentity(), TTL: time.Minute, Heartbeat: time.Second},
		claims: claimDir{dir: filepath.Join(dir, "claims")}, holderPath: filepath.Join(dir, "holder.json"), holderID: "late", mode: ModeLeaseOnly}
	l, won, err := w.claim(context.Background(), observation{HolderStatus: HolderStatus{Epoch: 3}}, "test", false, 0)
	if err != nil || won || l != nil {
		t.Fatalf("stale claim of epoch 4 accepted: %v %v", won, err)
	}
}

// TestLingeringFlock: flock stays refused (a dead client's lock lingering)
// but the holder record stops changing: after the TTL the waiter takes over
// without flock, and its record says so.
func TestLingeringFlock(t *testing.T) {
	dir := t.TempDir()
	h := farHolder(1)
	h.Mode, h.HasFlock = ModeFlock, true
	writeHolder(t, dir, h)
	stuck := flock.New(filepath.Join(dir, "lock"))
	if ok, err := stuck.TryLock(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	defer stuck.Unlock()
	clk := newFakeClock()
	start := clk.Now()
	core, logs := observer.New(zap.InfoLevel)
	ch := acquireAsync(context.Background(), Options{Dir: dir, Clock: clk, TTL: 10 * time.Second, Logger: zap.New(core)})
	r := clk.drive(t, ch, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.l.Release()
	if w := r.at.Sub(start); w < 10*time.Second {
		t.Fatalf("took over after %s, before the TTL", w)
	}
	st, _ := ReadHolder(dir)
	if st.Holder.HasFlock || st.Holder.Mode != ModeFlock || st.Epoch != 2 {
		t.Fatalf("record after lingering-lock takeover: %+v", st.Holder)
	}
	if len(logs.FilterMessageSnippet("took over").FilterFieldKey("reason").All()) != 1 ||
		!strings.Contains(logs.FilterMessageSnippet("took over").All()[0].ContextMap()["reason"].(string), "linger") {
		t.Fatalf("no lingering-lock warning: %v", logs.All())
	}
}

// TestLingeringFlockReleased: flock stays refused (MooseFS keeps a dead
// client's lock with its session) while the holder record says released: the
// waiter claims at once, without flock, instead of waiting a TTL at every
// later boot.
func TestLingeringFlockReleased(t *testing.T) {
	dir := t.TempDir()
	h := farHolder(1)
	h.Mode, h.Released = ModeFlock, true
	writeHolder(t, dir, h)
	stuck := flock.New(filepath.Join(dir, "lock"))
	if ok, err := stuck.TryLock(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	defer stuck.Unlock()
	l, err := Acquire(context.Background(), Options{Dir: dir, TTL: time.Hour, WaitTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("a released lock under a lingering flock was not taken: %v", err)
	}
	defer l.Release()
	st, _ := ReadHolder(dir)
	if st.Epoch != 2 || st.Holder.HasFlock {
		t.Fatalf("record after claiming under a lingering flock: %+v", st.Holder)
	}
}

// TestFlockTwoHoldersFoundAtCheck: the double grant is recognised when the
// fenced holder learns of it at a Check, before any heartbeat.
func TestFlockTwoHoldersFoundAtCheck(t *testing.T) {
	dir := t.TempDir()
	broken := withFlock(nil)
	a, err := acquire(context.Background(), Options{Dir: dir, TTL: time.Hour}, broken)
	if err != nil {
		t.Fatal(err)
	}
	b, err := acquire(context.Background(), Options{Dir: dir, TTL: time.Hour, WaitTimeout: time.Second}, broken)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if err := a.Check(); !errors.Is(err, ErrFenced) {
		t.Fatalf("a.Check after b took over: %v", err)
	}
	a.Release()
	if st, err := ReadHolder(dir); err != nil || !st.FlockUnreliable {
		t.Fatalf("no flock-unreliable marker after a double grant found at Check: %+v %v", st, err)
	}
}

// TestLockFileDeletedUnderHolder: someone deletes the lock file while a
// holder has flock on it; a newcomer flocks the new file, takes the lock
// over (flock looked free), and the fenced holder marks flock unreliable.
func TestLockFileDeletedUnderHolder(t *testing.T) {
	dir := t.TempDir()
	a, err := Acquire(context.Background(), Options{Dir: dir, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "lock")); err != nil {
		t.Fatal(err)
	}
	b, err := Acquire(context.Background(), Options{Dir: dir, TTL: time.Hour, WaitTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("newcomer after the lock file was deleted: %v", err)
	}
	defer b.Release()
	if err := a.Check(); !errors.Is(err, ErrFenced) {
		t.Fatalf("holder whose lock file was deleted: Check %v, want fenced", err)
	}
	a.Release()
	if st, err := ReadHolder(dir); err != nil || !st.FlockUnreliable {
		t.Fatalf("no flock-unreliable marker after a takeover through a deleted lock file: %+v %v", st, err)
	}
}

// TestFlockFreeButLeaseOnlyHolderLive: getting flock does not override a
// live holder that runs without flock; a holder that had flock is gone once
// flock is free.
func TestFlockFreeButLeaseOnlyHolderLive(t *testing.T) {
	dir := t.TempDir()
	writeHolder(t, dir, farHolder(1)) // lease-only, far host, no flock
	_, err := Acquire(context.Background(), Options{Dir: dir, WaitTimeout: 200 * time.Millisecond, PollMax: 20 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("flock-mode waiter overrode a live lease-only holder: %v", err)
	}
	dir2 := t.TempDir()
	h := farHolder(1)
	h.Mode, h.HasFlock = ModeFlock, true
	writeHolder(t, dir2, h)
	l, err := Acquire(context.Background(), Options{Dir: dir2, WaitTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("flock free and holder had flock, still waited: %v", err)
	}
	l.Release()
}

func TestCancelWhileWaiting(t *testing.T) {
	dir := t.TempDir()
	a, err := Acquire(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err = Acquire(ctx, Options{Dir: dir, PollMax: 20 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	a.Release()
	// The cancelled waiter must not have kept flock.
	b, err := Acquire(context.Background(), Options{Dir: dir, WaitTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b.Release()
}

// TestHolderContextEnds: when the ctx given to Acquire ends, the heartbeat
// stops and the lock counts as lost; Release still marks it released.
func TestHolderContextEnds(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	l, err := Acquire(ctx, Options{Dir: dir, Heartbeat: 10 * time.Millisecond, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-l.Lost():
	case <-time.After(2 * time.Second):
		t.Fatal("Lost not closed after ctx ended")
	}
	if !errors.Is(l.Err(), context.Canceled) || errors.Is(l.Err(), ErrFenced) {
		t.Fatalf("Err: %v", l.Err())
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if st, _ := ReadHolder(dir); !st.Released {
		t.Fatalf("not released: %+v", st)
	}
}

func TestOffMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nothing-here")
	l, err := Acquire(context.Background(), Options{Dir: dir, Mode: ModeOff})
	if err != nil || l.Mode() != ModeOff || l.Check() != nil {
		t.Fatal(err)
	}
	l.SetPhase("x")
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("off mode wrote %s", dir)
	}
}

func TestParseModeAndOptions(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeFlock, "flock": ModeFlock, "lease-only": ModeLeaseOnly, "off": ModeOff} {
		if m, err := ParseMode(in); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, m, err)
		}
	}
	if _, err := ParseMode("lease"); err == nil || !strings.Contains(err.Error(), EnvMode) {
		t.Errorf("ParseMode(lease): %v", err)
	}
	if _, err := Acquire(context.Background(), Options{Dir: t.TempDir(), TTL: time.Second, Heartbeat: time.Second}); err == nil {
		t.Error("heartbeat >= TTL/2 accepted")
	}
	if _, err := Acquire(context.Background(), Options{}); err == nil {
		t.Error("empty Dir accepted")
	}
	for _, e := range []error{syscall.ENOLCK, syscall.ENOSYS, syscall.EOPNOTSUPP} {
		if !flockUnsupported(&os.PathError{Op: "flock", Err: e}) {
			t.Errorf("%v not treated as unsupported", e)
		}
	}
	if flockUnsupported(syscall.EIO) || flockUnsupported(syscall.EWOULDBLOCK) {
		t.Error("transient errors treated as unsupported")
	}
}

// TestNoGoroutineLeaks: every goroutine of locks and leases ends with
// Release or with its context.
func TestNoGoroutineLeaks(t *testing.T) {
	base := runtime.NumGoroutine()
	dir := t.TempDir()
	for _, mode := range []Mode{ModeFlock, ModeLeaseOnly, ModeOff} {
		l, err := Acquire(context.Background(), Options{Dir: dir, Mode: mode, Heartbeat: 5 * time.Millisecond, TTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, cancelWork := l.Context(context.Background()) // ended by cancel
		cancelWork()
		work, cancelWork := l.Context(context.Background()) // ended by Release
		time.Sleep(20 * time.Millisecond)
		l.Release()
		<-work.Done()
		if !errors.Is(context.Cause(work), ErrReleased) {
			t.Fatalf("cause %v", context.Cause(work))
		}
		cancelWork()
	}
	ctx, cancel := context.WithCancel(context.Background())
	l, err := Acquire(ctx, Options{Dir: dir, Heartbeat: 5 * time.Millisecond, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := HoldLease(ctx, LeaseOptions{Dir: dir, WorkerID: "w1", Generation: "g", Heartbeat: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ls2, err := HoldLease(context.Background(), LeaseOptions{Dir: dir, WorkerID: "w2", Generation: "g", Heartbeat: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	<-l.Lost()
	ls2.Release()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.Release()
	ls.Release()
}

// fakeFlock stands in for flock on filesystems we cannot reproduce here.
type fakeFlock struct {
	path string
	err  error // returned by TryLock when set; otherwise every TryLock succeeds
}

func (f *fakeFlock) TryLock() (bool, error) { return f.err == nil, f.err }
func (f *fakeFlock) Unlock() error          { return nil }
func (f *fakeFlock) Path() string           { return f.path }

func withFlock(err error) func(string) flocker {
	return func(p string) flocker { return &fakeFlock{path: p, err: err} }
}

// TestFlockUnsupportedFallsBack: ENOLCK from flock (NFS without lockd)
// switches to lease-only with a warning instead of failing.
func TestFlockUnsupportedFallsBack(t *testing.T) {
	dir := t.TempDir()
	core, logs := observer.New(zap.InfoLevel)
	l, err := acquire(context.Background(), Options{Dir: dir, Logger: zap.New(core)}, withFlock(&os.PathError{Op: "flock", Path: "lock", Err: syscall.ENOLCK}))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	st, _ := ReadHolder(dir)
	if l.Mode() != ModeLeaseOnly || st.Holder.HasFlock || st.Holder.Mode != ModeLeaseOnly {
		t.Fatalf("mode %s, record %+v", l.Mode(), st.Holder)
	}
	if len(logs.FilterMessageSnippet("flock is not supported").All()) != 1 {
		t.Fatalf("no fallback warning: %v", logs.All())
	}
	if _, err := acquire(context.Background(), Options{Dir: t.TempDir()}, withFlock(syscall.EIO)); err == nil || !strings.Contains(err.Error(), "flock") {
		t.Fatalf("other flock errors must fail: %v", err)
	}
}

// TestFlockTwoHolders: a filesystem whose flock lets everyone hold it. The
// first newcomer fences the live holder (flock looked free); the fenced
// holder recognises the double grant and marks the volume, after which
// newcomers judge holders by their records and wait.
func TestFlockTwoHolders(t *testing.T) {
	dir := t.TempDir()
	broken := withFlock(nil)
	a, err := acquire(context.Background(), Options{Dir: dir, TTL: 10 * time.Second, Heartbeat: 20 * time.Millisecond}, broken)
	if err != nil {
		t.Fatal(err)
	}
	b, err := acquire(context.Background(), Options{Dir: dir, TTL: 10 * time.Second, Heartbeat: 20 * time.Millisecond, WaitTimeout: time.Second}, broken)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	select {
	case <-a.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("first holder not fenced")
	}
	if err := a.Release(); !errors.Is(err, ErrFenced) {
		t.Fatalf("a.Release: %v", err)
	}
	st, err := ReadHolder(dir)
	if err != nil || !st.FlockUnreliable || st.Holder.HolderID != b.HolderID() {
		t.Fatalf("after the double grant: %+v %v", st, err)
	}
	_, err = acquire(context.Background(), Options{Dir: dir, WaitTimeout: 300 * time.Millisecond, PollMax: 20 * time.Millisecond}, broken)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("newcomer trusted a broken flock over a live holder: %v", err)
	}
	b.Release()
	c, err := acquire(context.Background(), Options{Dir: dir, WaitTimeout: time.Second}, broken)
	if err != nil {
		t.Fatalf("released lock not taken: %v", err)
	}
	c.Release()
}

// TestCrashLeftoversCleaned: temporary files of claimers and holders that
// crashed mid-write go once they are older than the TTL by the volume's
// clock; fresh ones (maybe a write in progress) stay.
func TestCrashLeftoversCleaned(t *testing.T) {
	dir := t.TempDir()
	claims := filepath.Join(dir, "claims")
	os.MkdirAll(claims, 0o755)
	old := time.Now().Add(-time.Hour)
	leftovers := map[string]bool{ // path -> should survive
		filepath.Join(claims, ".1.vbtmp.deadhost.77.abcdef"):      false,
		filepath.Join(dir, ".holder.json.vbtmp.deadhost.77.abc"):  false,
		filepath.Join(claims, ".2.vbtmp.livehost.78.abcdef"):      true,
		filepath.Join(dir, ".state.json.vbtmp.deadhost.77.abcde"): true, // not ours to judge
	}
	for p, fresh := range leftovers {
		os.WriteFile(p, []byte("{"), 0o644)
		if !fresh || strings.Contains(p, "state.json") {
			os.Chtimes(p, old, old)
		}
	}
	l, err := Acquire(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	for p, keep := range leftovers {
		_, err := os.Stat(p)
		if keep != (err == nil) {
			t.Errorf("%s: kept=%v, want %v", filepath.Base(p), err == nil, keep)
		}
	}
}
