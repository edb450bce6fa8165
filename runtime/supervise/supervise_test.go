package supervise_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/runtime/health"
)

func TestExitCodesPropagate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -KILL $$", 137},
	} {
		t.Run(strconv.Itoa(tc.want), func(t *testing.T) {
			t.Parallel()
			p := start(t, nil, nil, "sh", "-c", "echo handler-line; "+tc.script)
			if got := p.exitCode(10 * time.Second); got != tc.want {
				t.Errorf("exit code %d, want %d", got, tc.want)
			}
			// The handler's stdout is ours, unchanged; volboot's lines
			// are JSON on stderr.
			if out := p.read(p.stdout); out != "handler-line\n" {
				t.Errorf("stdout %q, want the handler's line only", out)
			}
			if !logContains(p, `"logger":"volboot"`) || !logContains(p, `"msg":"handler exited"`) {
				t.Errorf("volboot's own log lines missing from stderr")
			}
		})
	}
}

// Children of the handler are in its process group and get the SIGTERM
// volboot receives.
func TestSIGTERMReachesWholeGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := script(t, dir, "handler.sh", `#!/bin/sh
D="$1"
sh -c 'trap "echo child1 > $0/c1; exit 0" TERM; while :; do sleep 0.05; done' "$D" &
sh -c 'trap "echo child2 > $0/c2; exit 0" TERM; while :; do sleep 0.05; done' "$D" &
trap 'echo parent > "$D/p"; wait; exit 0' TERM
touch "$D/started"
while :; do sleep 0.05; done
`)
	p := start(t, nil, []string{"--stop-grace", "20s"}, h, dir)
	p.waitFile(filepath.Join(dir, "started"), 10*time.Second)
	time.Sleep(100 * time.Millisecond) // let the children install their traps
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(10 * time.Second); got != 0 {
		t.Errorf("exit code %d, want 0 (the handler exited 0 on SIGTERM)", got)
	}
	for _, f := range []string{"p", "c1", "c2"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s did not see SIGTERM: %v", f, err)
		}
	}
}

func TestGraceThenSIGKILL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// SIG_IGN survives exec, so the sleeps ignore SIGTERM too.
	h := script(t, dir, "stubborn.sh", `#!/bin/sh
trap "" TERM
touch "$1/started"
while :; do sleep 0.05; done
`)
	p := start(t, nil, []string{"--stop-grace", "400ms"}, h, dir)
	p.waitFile(filepath.Join(dir, "started"), 10*time.Second)
	sent := time.Now()
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(10 * time.Second); got != 137 {
		t.Errorf("exit code %d, want 137", got)
	}
	if el := time.Since(sent); el < 400*time.Millisecond {
		t.Errorf("killed after %s, before the 400ms grace", el)
	}
	if !logContains(p, "still running after stop grace") {
		t.Error("no log line about the grace expiring")
	}
}

// /ping: 204 bootstrapping, 204 warm-loading, 200 on READY=1, 503 after a
// crash with restart=never; the exit code is the handler's.
func TestPingSequenceNotifyThenCrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := script(t, dir, "handler.py", `#!/usr/bin/env python3
import os, socket, sys, time
d = sys.argv[1]
def wait(name):
    while not os.path.exists(os.path.join(d, name)):
        time.sleep(0.01)
open(os.path.join(d, "env"), "w").write(os.environ.get("NOTIFY_SOCKET", ""))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=loading model", os.environ["NOTIFY_SOCKET"])
wait("go")
s.sendto(b"READY=1\nSTATUS=serving", os.environ["NOTIFY_SOCKET"])
wait("crash")
sys.exit(1)
`)
	p := start(t, nil, []string{"--ready", "notify", "--bootstrap-sleep", "700ms", "--linger", "30s"}, h, dir)
	if got := p.ping(); got != 204 {
		t.Fatalf("/ping during bootstrap = %d, want 204", got)
	}
	// The bootstrap sets its totals as soon as it runs.
	deadline := time.Now().Add(5 * time.Second)
	for s := p.status(); s.Progress.BytesTotal != 100; s = p.status() {
		if s.Phase != health.PhaseBootstrapping || time.Now().After(deadline) {
			t.Fatalf("/status during bootstrap: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s := p.waitPhase(health.PhaseWarmLoading, 204, 10*time.Second)
	if s.HandlerPID == 0 || s.Timings.BootstrapSeconds == nil || *s.Timings.BootstrapSeconds < 0.6 {
		t.Errorf("warm-loading status: %+v", s)
	}
	touch(t, filepath.Join(dir, "go"))
	s = p.waitPhase(health.PhaseReady, 200, 10*time.Second)
	if s.Generation == nil || *s.Generation != "testgeneration" || len(s.Groups) != 1 || s.Timings.ReadySeconds == nil {
		t.Errorf("ready status: %+v", s)
	}
	if ns := p.read(filepath.Join(dir, "env")); !strings.HasSuffix(ns, "notify.sock") {
		t.Errorf("handler's NOTIFY_SOCKET = %q", ns)
	}
	touch(t, filepath.Join(dir, "crash"))
	p.waitPhase(health.PhaseFailed, 503, 10*time.Second)
	// Lingering on 503 until a signal ends it; the code is the handler's.
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(10 * time.Second); got != 1 {
		t.Errorf("exit code %d, want the handler's 1", got)
	}
	if !logContains(p, `"status":"serving"`) {
		t.Error("handler STATUS= not logged")
	}
}

func TestStartedReadiness(t *testing.T) {
	t.Parallel()
	p := start(t, nil, nil, "sh", "-c", "exec sleep 30")
	p.waitPhase(health.PhaseReady, 200, 10*time.Second)
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(10 * time.Second); got != 143 {
		t.Errorf("exit code %d, want 143 (sleep killed by SIGTERM)", got)
	}
}

// TestAfterReady: AfterReady starts once the handler is ready, not before,
// and Run waits for it to stop before it exits.
func TestAfterReady(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "after")
	p := start(t, nil, []string{"--ready", "http://127.0.0.1:1/never", "--after-ready-file", marker}, "sh", "-c", "exec sleep 30")
	p.waitPhase(health.PhaseWarmLoading, 204, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("AfterReady ran before the handler was ready")
	}
	p.signal(syscall.SIGTERM)
	p.exitCode(10 * time.Second)

	q := start(t, nil, []string{"--after-ready-file", marker}, "sh", "-c", "exec sleep 30")
	q.waitPhase(health.PhaseReady, 200, 10*time.Second)
	if got := q.waitFile(marker, 10*time.Second); got != "started\n" {
		t.Fatalf("after ready: %q", got)
	}
	q.signal(syscall.SIGTERM)
	q.exitCode(10 * time.Second)
	if got := q.read(marker); got != "stopped\n" {
		t.Errorf("after exit: %q, want Run to have waited for AfterReady to stop", got)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestHTTPReadiness(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := freePort(t)
	h := script(t, dir, "server.py", `#!/usr/bin/env python3
import os, sys, http.server
d, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = os.path.exists(os.path.join(d, "loaded"))
        self.send_response(200 if ok else 503)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
`)
	p := start(t, nil, []string{"--ready", fmt.Sprintf("http://127.0.0.1:%d/ready", port)}, h, dir, strconv.Itoa(port))
	p.waitPhase(health.PhaseWarmLoading, 204, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // several polls answered 503 or refused
	if got := p.ping(); got != 204 {
		t.Fatalf("/ping before the handler is loaded = %d, want 204", got)
	}
	touch(t, filepath.Join(dir, "loaded"))
	p.waitPhase(health.PhaseReady, 200, 10*time.Second)
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(10 * time.Second); got != 143 {
		t.Errorf("exit code %d, want 143", got)
	}
}

func TestReadinessTimeoutMarksUnhealthy(t *testing.T) {
	t.Parallel()
	p := start(t, nil, []string{"--ready", "notify", "--ready-timeout", "300ms"}, "sh", "-c", "exec sleep 30")
	p.waitPhase(health.PhaseWarmLoading, 204, 10*time.Second)
	p.waitPhase(health.PhaseUnhealthy, 503, 10*time.Second)
	if !logContains(p, "not ready within the readiness timeout") {
		t.Error("readiness timeout not logged")
	}
	p.signal(syscall.SIGINT)
	if got := p.exitCode(10 * time.Second); got != 130 {
		t.Errorf("exit code %d, want 130", got)
	}
}

func TestOnFailureRestartsWithBackoff(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Fails twice, then succeeds; each start records its time.
	h := script(t, dir, "flaky.py", `#!/usr/bin/env python3
import os, sys, time
log = os.path.join(sys.argv[1], "starts")
with open(log, "a") as f:
    f.write("%f\n" % time.time())
n = len(open(log).read().split())
sys.exit(0 if n >= 3 else 5)
`)
	p := start(t, nil, []string{"--restart", "on-failure", "--restart-initial", "200ms", "--restart-max", "5s"}, h, dir)
	if got := p.exitCode(20 * time.Second); got != 0 {
		t.Fatalf("exit code %d, want 0 after the third start succeeded", got)
	}
	var ts []float64
	for _, f := range strings.Fields(p.read(filepath.Join(dir, "starts"))) {
		v, _ := strconv.ParseFloat(f, 64)
		ts = append(ts, v)
	}
	if len(ts) != 3 {
		t.Fatalf("%d starts, want 3", len(ts))
	}
	// Backoffs 200ms then 400ms; each gap also holds a python start-up.
	if g := ts[1] - ts[0]; g < 0.2 {
		t.Errorf("first backoff %.3fs, want >= 0.2s", g)
	}
	if g := ts[2] - ts[1]; g < 0.4 {
		t.Errorf("second backoff %.3fs, want >= 0.4s (doubled)", g)
	}
}

func TestRestartingPingsAndMaxRestarts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := start(t, nil, []string{"--restart", "on-failure", "--restart-initial", "600ms", "--max-restarts", "2", "--linger", "30s"},
		"sh", "-c", `echo x >> "$0/starts"; exit 4`, dir)
	s := p.waitPhase(health.PhaseRestarting, 204, 10*time.Second)
	if !strings.Contains(s.Detail, "exit 4") {
		t.Errorf("restarting detail %q", s.Detail)
	}
	s = p.waitPhase(health.PhaseFailed, 503, 20*time.Second)
	if s.Restarts != 2 || !strings.Contains(s.Detail, "gave up after 2 restarts") {
		t.Errorf("failed status: %+v", s)
	}
	p.signal(syscall.SIGTERM) // end the linger
	if got := p.exitCode(10 * time.Second); got != 4 {
		t.Errorf("exit code %d, want 4", got)
	}
	if n := len(strings.Fields(p.read(filepath.Join(dir, "starts")))); n != 3 {
		t.Errorf("%d starts, want 3", n)
	}
}

func TestSignalDuringBackoffExits(t *testing.T) {
	t.Parallel()
	p := start(t, nil, []string{"--restart", "on-failure", "--restart-initial", "30s"}, "sh", "-c", "exit 1")
	p.waitPhase(health.PhaseRestarting, 204, 10*time.Second)
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(5 * time.Second); got != 143 {
		t.Errorf("exit code %d, want 143", got)
	}
}

func TestSignalDuringBootstrapCancelsIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	marker := filepath.Join(dir, "cancelled")
	ran := filepath.Join(dir, "ran")
	p := start(t, nil, []string{"--bootstrap-sleep", "60s", "--bootstrap-cancel-file", marker}, "touch", ran)
	p.waitPhase(health.PhaseBootstrapping, 204, 5*time.Second)
	p.signal(syscall.SIGINT)
	if got := p.exitCode(5 * time.Second); got != 130 {
		t.Errorf("exit code %d, want 130", got)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("bootstrap did not see its context cancelled: %v", err)
	}
	if _, err := os.Stat(ran); err == nil {
		t.Error("handler ran after the bootstrap was cancelled")
	}
}

func TestBootstrapFailure(t *testing.T) {
	t.Parallel()
	p := start(t, nil, []string{"--bootstrap-fail", "required group tts failed", "--linger", "30s"}, "true")
	s := p.waitPhase(health.PhaseFailed, 503, 5*time.Second)
	if !strings.Contains(s.Detail, "required group tts failed") {
		t.Errorf("detail %q", s.Detail)
	}
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(5 * time.Second); got != 1 {
		t.Errorf("exit code %d, want 1", got)
	}
}

func TestMissingHandlerCommand(t *testing.T) {
	t.Parallel()
	p := start(t, nil, nil, "volboot-no-such-handler")
	if got := p.exitCode(5 * time.Second); got != 127 {
		t.Errorf("exit code %d, want 127", got)
	}
	if !logContains(p, "not found in the handler's PATH") {
		t.Error("missing command not explained")
	}
}

// orphanScript makes an orphaned grandchild that records its adoptive
// parent, then (still running) counts zombies among the processes that
// parent owns.
const orphanScript = `
D="$0"
sup=$PPID
# The subshell exits at once, orphaning the inner sh, which later reads
# its parent from /proc (not $PPID, fixed at its start).
(sh -c 'sleep 0.2; awk "{print \$4}" /proc/$$/stat > "$0/ppid.tmp"; mv "$0/ppid.tmp" "$0/ppid"' "$D" &)
while [ ! -f "$D/ppid" ]; do sleep 0.02; done
sleep 0.3
cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$sup" '$3 == "Z" && $4 == p' | wc -l > "$D/zombies"
echo "$sup" > "$D/sup"
`

func checkOrphanReaped(t *testing.T, dir string, wantParent string) {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if got := read("ppid"); got != wantParent {
		t.Errorf("orphan adopted by %s, want the supervisor %s", got, wantParent)
	}
	if got := read("zombies"); got != "0" {
		t.Errorf("%s zombie children of the supervisor remain", got)
	}
}

func TestOrphansReapedAsSubreaper(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := start(t, nil, nil, "sh", "-c", orphanScript, dir)
	if got := p.exitCode(10 * time.Second); got != 0 {
		t.Fatalf("exit code %d", got)
	}
	checkOrphanReaped(t, dir, strconv.Itoa(p.cmd.Process.Pid))
}

func TestOrphansReapedAsPID1(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root for unshare --pid")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed")
	}
	if out, err := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("unshare --pid --fork --mount-proc does not work here: %v %s", err, out)
	}
	dir := t.TempDir()
	p := start(t, []string{"unshare", "--pid", "--fork", "--mount-proc"}, nil, "sh", "-c", orphanScript, dir)
	if got := p.exitCode(10 * time.Second); got != 0 {
		t.Fatalf("exit code %d", got)
	}
	if sup := strings.TrimSpace(p.read(filepath.Join(dir, "sup"))); sup != "1" {
		t.Fatalf("supervisor was pid %s in the namespace, want 1", sup)
	}
	checkOrphanReaped(t, dir, "1")
}

func TestExitCodeThroughPID1(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root for unshare --pid")
	}
	if out, err := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("unshare --pid does not work here: %v %s", err, out)
	}
	p := start(t, []string{"unshare", "--pid", "--fork", "--mount-proc"}, nil, "sh", "-c", "exit 3")
	if got := p.exitCode(10 * time.Second); got != 3 {
		t.Errorf("exit code %d, want 3", got)
	}
}

// A bootstrap that never returns after cancellation must not keep the
// worker alive past the stop grace.
func TestStuckBootstrapAbandonedAfterGrace(t *testing.T) {
	t.Parallel()
	p := start(t, nil, []string{"--bootstrap-sleep", "60s", "--bootstrap-ignore-cancel", "--stop-grace", "300ms"}, "true")
	p.waitPhase(health.PhaseBootstrapping, 204, 5*time.Second)
	sent := time.Now()
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(5 * time.Second); got != 143 {
		t.Errorf("exit code %d, want 143", got)
	}
	if el := time.Since(sent); el < 300*time.Millisecond {
		t.Errorf("gave up after %s, before the grace", el)
	}
	if !logContains(p, "bootstrap did not stop within the stop grace") {
		t.Error("giving up not logged")
	}
}

// Every forwarded signal reaches the handler, and only SIGTERM/SIGINT stop
// volboot.
func TestAllForwardedSignalsReachHandler(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := script(t, dir, "sigs.py", `#!/usr/bin/env python3
import os, signal, sys
d = sys.argv[1]
got = []
def rec(signum, frame):
    got.append(signal.Signals(signum).name)
    with open(os.path.join(d, "got.tmp"), "w") as f:
        f.write(" ".join(got))
    os.rename(os.path.join(d, "got.tmp"), os.path.join(d, "got"))
    if signum == signal.SIGTERM:
        sys.exit(7)
for s in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
    signal.signal(s, rec)
open(os.path.join(d, "started"), "w").close()
while True:
    signal.pause()
`)
	p := start(t, nil, nil, h, dir)
	p.waitFile(filepath.Join(dir, "started"), 10*time.Second)
	want := ""
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2} {
		p.signal(sig)
		want = strings.TrimSpace(want + " " + strings.ToUpper("SIG"+sigName(sig)))
		deadline := time.Now().Add(10 * time.Second)
		for p.read(filepath.Join(dir, "got")) != want {
			if time.Now().After(deadline) {
				t.Fatalf("handler saw %q, want %q", p.read(filepath.Join(dir, "got")), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if p.ping() != 200 {
			t.Fatalf("/ping %d after %s: volboot should keep supervising", p.ping(), sig)
		}
	}
	p.signal(syscall.SIGTERM)
	if got := p.exitCode(10 * time.Second); got != 7 {
		t.Errorf("exit code %d, want the handler's 7", got)
	}
}

func sigName(s syscall.Signal) string {
	switch s {
	case syscall.SIGHUP:
		return "hup"
	case syscall.SIGQUIT:
		return "quit"
	case syscall.SIGUSR1:
		return "usr1"
	case syscall.SIGUSR2:
		return "usr2"
	}
	return s.String()
}

// volboot started with stdin closed still starts the handler (on
// /dev/null) rather than failing the exec with EBADF.
func TestClosedStdinBecomesDevNull(t *testing.T) {
	t.Parallel()
	p := start(t, []string{"sh", "-c", `exec "$0" "$@" <&-`}, nil, "sh", "-c", "cat; echo cat=$?")
	if got := p.exitCode(10 * time.Second); got != 0 {
		t.Fatalf("exit code %d, want 0", got)
	}
	if out := p.read(p.stdout); out != "cat=0\n" {
		t.Errorf("stdout %q", out)
	}
}

// TestSetsidGrandchildKilled: a grandchild that left the handler's process
// group and session (setsid) does not outlive the handler.
func TestSetsidGrandchildKilled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := `setsid sleep 300 & echo $! > "$0/pid"; sleep 0.1`
	p := start(t, nil, nil, "sh", "-c", script, dir)
	if got := p.exitCode(10 * time.Second); got != 0 {
		t.Fatalf("exit code %d", got)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(p.read(filepath.Join(dir, "pid"))))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return // gone
		}
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(strings.TrimSpace(string(b[i+1:])), "Z") {
			return // killed, waiting to be reaped by whoever adopted it
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the handler's setsid grandchild %d outlived it", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
