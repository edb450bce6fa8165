package health

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func listen(t *testing.T, st *State) string {
	t.Helper()
	srv, err := Listen("127.0.0.1:0", st, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return "http://" + srv.Addr().String()
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, []byte(b.String())
}

func TestPingFollowsPhase(t *testing.T) {
	st := NewState(nil)
	base := listen(t, st)
	for _, tc := range []struct {
		phase Phase
		code  int
	}{
		{PhaseBootstrapping, 204},
		{PhaseWarmLoading, 204},
		{PhaseReady, 200},
		{PhaseRestarting, 204},
		{PhaseUnhealthy, 503},
		{PhaseStopping, 503},
		{PhaseFailed, 503},
	} {
		st.SetPhase(tc.phase, "")
		if code, _ := get(t, base+"/ping"); code != tc.code {
			t.Errorf("phase %s: /ping %d, want %d", tc.phase, code, tc.code)
		}
	}
	if code, _ := get(t, base+"/nope"); code != 404 {
		t.Errorf("/nope: %d, want 404", code)
	}
	resp, err := http.Post(base+"/ping", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /ping: %d, want 405", resp.StatusCode)
	}
}

func TestStatusJSON(t *testing.T) {
	var clock atomic.Int64
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return start.Add(time.Duration(clock.Load())) }
	st := NewState(now)
	base := listen(t, st)

	_, body := get(t, base+"/status")
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("/status is not JSON: %v\n%s", err, body)
	}
	if raw["generation"] != nil {
		t.Errorf("generation before bootstrap = %v, want null", raw["generation"])
	}
	if g, ok := raw["groups"].([]any); !ok || len(g) != 0 {
		t.Errorf("groups = %#v, want []", raw["groups"])
	}

	st.SetTotals(1000, 4)
	st.AddProgress(250, 1)
	st.AddProgress(250, 1)
	st.SetGroups([]Group{{Name: "tts", State: "installed"}, {Name: "flash-attn", State: "skipped", Reason: "compute capability 7.5 < 8.0"}})
	st.SetGeneration("abc123")
	clock.Store(int64(90 * time.Second))
	st.BootstrapDone()
	clock.Store(int64(91 * time.Second))
	st.HandlerStarted(4242)
	clock.Store(int64(100 * time.Second))
	st.SetPhase(PhaseReady, "serving")

	_, body = get(t, base+"/status")
	var s Snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatal(err)
	}
	if s.Phase != PhaseReady || s.Detail != "serving" || s.HandlerPID != 4242 || s.Restarts != 0 {
		t.Errorf("snapshot %+v", s)
	}
	if s.Progress != (Progress{BytesDone: 500, BytesTotal: 1000, PackagesDone: 2, PackagesTotal: 4}) {
		t.Errorf("progress %+v", s.Progress)
	}
	if s.Generation == nil || *s.Generation != "abc123" || len(s.Groups) != 2 || s.Groups[1].Reason == "" {
		t.Errorf("generation/groups %v %+v", s.Generation, s.Groups)
	}
	if s.Timings.BootstrapSeconds == nil || *s.Timings.BootstrapSeconds != 90 ||
		s.Timings.ReadySeconds == nil || *s.Timings.ReadySeconds != 100 ||
		s.Timings.HandlerStartSeconds == nil || *s.Timings.HandlerStartSeconds != 91 ||
		s.Timings.UptimeSeconds != 100 || !s.Timings.StartedAt.Equal(start) {
		t.Errorf("timings %+v", s.Timings)
	}
	st.HandlerStarted(4243)
	if got := st.Snapshot().Restarts; got != 1 {
		t.Errorf("restarts after second start = %d, want 1", got)
	}
}

// The bootstrap writes while the server reads; -race checks the locking.
func TestConcurrentUpdates(t *testing.T) {
	st := NewState(nil)
	base := listen(t, st)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			st.AddProgress(1, 0)
			st.SetGroups([]Group{{Name: "g", State: "installed"}})
			st.SetPhase(PhaseWarmLoading, "x")
		}
	}()
	for i := 0; i < 20; i++ {
		get(t, base+"/status")
		get(t, base+"/ping")
	}
	close(stop)
	wg.Wait()
}

func TestDefaultAddr(t *testing.T) {
	env := map[string]string{"PORT_HEALTH": "8081"}
	if got := DefaultAddr(func(k string) string { return env[k] }); got != ":8081" {
		t.Errorf("DefaultAddr = %q", got)
	}
	if got := DefaultAddr(func(string) string { return "" }); got != "" {
		t.Errorf("DefaultAddr without PORT_HEALTH = %q", got)
	}
}

func TestListenReportsClash(t *testing.T) {
	st := NewState(nil)
	srv, err := Listen("127.0.0.1:0", st, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	_, err = Listen(srv.Addr().String(), st, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "PORT_HEALTH") {
		t.Fatalf("err = %v, want one naming the flag", err)
	}
}

func TestParseInitTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 7 * time.Minute, "600": 10 * time.Minute, " 30 ": 30 * time.Second, "10m": 10 * time.Minute} {
		got, err := ParseInitTimeout(in)
		if err != nil || got != want {
			t.Errorf("ParseInitTimeout(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-5", "soon", "-1m"} {
		if _, err := ParseInitTimeout(in); err == nil || !strings.Contains(err.Error(), "RUNPOD_INIT_TIMEOUT") {
			t.Errorf("ParseInitTimeout(%q) err = %v", in, err)
		}
	}
}

func TestEstimateInit(t *testing.T) {
	const GB = 1 << 30
	timeout := 7 * time.Minute
	// 12 GB left at 20 MB/s is ~10 minutes: too long.
	e := EstimateInit(time.Minute, Progress{BytesDone: 1 * GB, BytesTotal: 13 * GB}, Rates{Download: 20e6}, timeout)
	if !e.Known || !e.Outlasts || e.Remaining < 10*time.Minute {
		t.Errorf("slow: %+v", e)
	}
	// The same at 500 MB/s is ~26 s.
	e = EstimateInit(time.Minute, Progress{BytesDone: 1 * GB, BytesTotal: 13 * GB}, Rates{Download: 500e6}, timeout)
	if !e.Known || e.Outlasts || e.Remaining > 30*time.Second {
		t.Errorf("fast: %+v", e)
	}
	if e := EstimateInit(time.Minute, Progress{BytesTotal: GB}, Rates{}, timeout); e.Known {
		t.Errorf("no rate: %+v", e)
	}
	if e := EstimateInit(8*time.Minute, Progress{BytesTotal: GB}, Rates{}, timeout); !e.Known || !e.Outlasts {
		t.Errorf("already over: %+v", e)
	}
	if e := EstimateInit(8*time.Minute, Progress{BytesDone: GB, BytesTotal: GB}, Rates{}, timeout); e.Outlasts {
		t.Errorf("done but late is not a projection: %+v", e)
	}
	// Downloads done in a minute, but the unpacking onto a slow volume
	// runs at 4 MB/s of wheels with 3 GB left: it decides.
	e = EstimateInit(time.Minute, Progress{BytesDone: 4 * GB, BytesTotal: 4 * GB, UnpackDone: GB, UnpackTotal: 4 * GB}, Rates{Download: 500e6, Unpack: 4e6}, timeout)
	if !e.Known || !e.Outlasts || e.Remaining < 13*time.Minute {
		t.Errorf("slow unpack: %+v", e)
	}
	// Unpacking measured, downloads not yet: the unpack projection alone.
	e = EstimateInit(time.Minute, Progress{BytesTotal: 4 * GB, UnpackDone: GB, UnpackTotal: 2 * GB}, Rates{Unpack: 100e6}, timeout)
	if !e.Known || e.Outlasts || e.Remaining > 15*time.Second {
		t.Errorf("fast unpack: %+v", e)
	}
	for _, c := range []struct{ projected, want time.Duration }{
		{10 * time.Minute, 12 * time.Minute},
		{9*time.Minute + 20*time.Second, 12 * time.Minute}, // 11 min 12 s, rounded up
		{time.Minute, 2 * time.Minute},
	} {
		if got := Suggest(c.projected); got != c.want {
			t.Errorf("Suggest(%s) = %s, want %s", c.projected, got, c.want)
		}
	}
}

// The warning comes from the unpack's pace when downloads are done fast
// and says what RUNPOD_INIT_TIMEOUT to set.
func TestWatchInitBudgetProjectsTheUnpack(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	var clock atomic.Int64
	start := time.Unix(1_700_000_000, 0)
	st := NewState(func() time.Time { return start.Add(time.Duration(clock.Load())) })
	st.SetTotals(1<<30, 100)
	st.AddProgress(1<<30, 0) // downloads done
	st.SetUnpacked(0, 2<<30)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchInitBudget(ctx, st, 7*time.Minute, time.Millisecond, zap.New(core))
	}()
	deadline := time.Now().Add(10 * time.Second)
	var unpacked int64
	for logs.Len() == 0 && time.Now().Before(deadline) {
		clock.Add(int64(time.Second))
		unpacked += 2e6 // 2 MB/s of wheels: 2 GiB take about 18 minutes
		st.SetUnpacked(unpacked, 2<<30)
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if logs.Len() != 1 {
		t.Fatalf("%d warnings, want 1", logs.Len())
	}
	msg := logs.All()[0].Message
	if !strings.Contains(msg, "Set RUNPOD_INIT_TIMEOUT to ") || !strings.Contains(msg, "volboot sync") {
		t.Errorf("warning %q does not say what to set", msg)
	}
	var secs int
	fmt.Sscanf(msg[strings.Index(msg, "Set RUNPOD_INIT_TIMEOUT to ")+len("Set RUNPOD_INIT_TIMEOUT to "):], "%d", &secs)
	if secs < 18*60 || secs > 30*60 {
		t.Errorf("suggested RUNPOD_INIT_TIMEOUT %d s for about 18 minutes of unpacking: %q", secs, msg)
	}
}

func TestWatchInitBudgetWarnsOnce(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	var clock atomic.Int64
	start := time.Unix(1_700_000_000, 0)
	st := NewState(func() time.Time { return start.Add(time.Duration(clock.Load())) })
	st.SetTotals(10<<30, 100) // 10 GiB at ~1 MB per fake second: hours
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchInitBudget(ctx, st, 7*time.Minute, time.Millisecond, zap.New(core))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for logs.Len() == 0 && time.Now().Before(deadline) {
		clock.Add(int64(time.Second))
		st.AddProgress(1e6, 0)
		time.Sleep(time.Millisecond)
	}
	if logs.Len() != 1 {
		t.Fatalf("%d warnings, want 1", logs.Len())
	}
	if msg := logs.All()[0].Message; !strings.Contains(msg, "volboot sync") {
		t.Errorf("warning %q does not say to pre-populate with volboot sync", msg)
	}
	if clock.Load() >= int64(6*time.Minute) {
		t.Fatalf("the projection warning came only after %s", time.Duration(clock.Load()))
	}
	// Then, 30 s before the timeout and not earlier, one line saying how
	// far it got; and nothing more.
	st.SetDetail("unpacking 12 wheels")
	st.AddProgress(0, 40)
	clock.Store(int64(7*time.Minute - 31*time.Second))
	time.Sleep(50 * time.Millisecond)
	if logs.Len() != 1 {
		t.Fatalf("the note before the kill came 31 s before the timeout")
	}
	clock.Store(int64(7*time.Minute - 30*time.Second))
	for logs.Len() == 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	<-done // both lines out
	cancel()
	if logs.Len() != 2 {
		t.Fatalf("%d lines, want 2", logs.Len())
	}
	if msg := logs.All()[1].Message; !strings.Contains(msg, `"unpacking 12 wheels"`) || !strings.Contains(msg, "40 of 100 packages") || !strings.Contains(msg, "next worker") {
		t.Errorf("the note before the kill says %q", msg)
	}
}

func TestWatchInitBudgetQuietWhenFast(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	var clock atomic.Int64
	st := NewState(func() time.Time { return time.Unix(0, clock.Load()) })
	st.SetTotals(1<<30, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchInitBudget(ctx, st, 7*time.Minute, time.Millisecond, zap.New(core))
	}()
	for i := 0; i < 200; i++ {
		clock.Add(int64(time.Second))
		st.AddProgress(50e6, 0) // 50 MB per fake second: 1 GiB in ~20 s
		time.Sleep(100 * time.Microsecond)
	}
	cancel()
	<-done
	if logs.Len() != 0 {
		t.Fatalf("warned on a fast bootstrap: %v", logs.All()[0].Message)
	}
}

func FuzzParseInitTimeout(f *testing.F) {
	for _, s := range []string{"", "600", "10m", "-1", "1e9", "99999999999999999999", "1h30m", " 7 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseInitTimeout(s)
		if err == nil && d <= 0 {
			t.Fatalf("ParseInitTimeout(%q) = %v without error", s, d)
		}
		if err != nil && !strings.Contains(err.Error(), "RUNPOD_INIT_TIMEOUT") {
			t.Fatalf("error %q does not name the variable", err)
		}
	})
}
