package reaper

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

func startReaper(t *testing.T) *Reaper {
	t.Helper()
	r, err := Start(zap.NewNop())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func waitStatus(t *testing.T, ch <-chan syscall.WaitStatus) syscall.WaitStatus {
	t.Helper()
	select {
	case ws := <-ch:
		return ws
	case <-time.After(10 * time.Second):
		t.Fatal("no exit status within 10s")
		return 0
	}
}

func attr() *syscall.ProcAttr {
	return &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}}
}

func TestExitStatusesDelivered(t *testing.T) {
	r := startReaper(t)
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -9 $$", 137},
		{"kill -TERM $$", 143},
	} {
		_, ch, err := r.ForkExec("/bin/sh", []string{"sh", "-c", tc.script}, attr())
		if err != nil {
			t.Fatal(err)
		}
		if got := ExitCode(waitStatus(t, ch)); got != tc.want {
			t.Errorf("%q: exit code %d, want %d", tc.script, got, tc.want)
		}
	}
}

// Children that exit at once race their own registration; every status
// must still reach its starter and none may be dropped as an orphan's.
func TestImmediateExitsAreNotLost(t *testing.T) {
	r := startReaper(t)
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(code int) {
			defer wg.Done()
			_, ch, err := r.ForkExec("/bin/sh", []string{"sh", "-c", "exit " + strconv.Itoa(code)}, attr())
			if err != nil {
				errs <- err.Error()
				return
			}
			select {
			case ws := <-ch:
				if ws.ExitStatus() != code {
					errs <- "wrong status for exit " + strconv.Itoa(code) + ": " + Describe(ws)
				}
			case <-time.After(10 * time.Second):
				errs <- "lost status of exit " + strconv.Itoa(code)
			}
		}(i % 7)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// As a subreaper, a grandchild orphaned by its parent is re-parented to us
// and reaped when it exits: no zombie stays behind.
func TestOrphanedGrandchildReapedAsSubreaper(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("running as PID 1; the subreaper path is not taken")
	}
	r := startReaper(t)
	dir := t.TempDir()
	ppidFile := filepath.Join(dir, "ppid")
	// The subshell backgrounds the grandchild and exits at once, orphaning
	// it; the grandchild then records who adopted it and exits.
	// $PPID is fixed when a shell starts, so the grandchild reads its
	// parent from /proc after the subshell is surely gone.
	script := `(sh -c 'sleep 0.2; awk "{print \$4}" /proc/$$/stat > "$1.tmp"; mv "$1.tmp" "$1"' sh "$0" &) ; exit 0`
	_, ch, err := r.ForkExec("/bin/sh", []string{"sh", "-c", script, ppidFile}, attr())
	if err != nil {
		t.Fatal(err)
	}
	if ws := waitStatus(t, ch); ExitCode(ws) != 0 {
		t.Fatalf("parent: %s", Describe(ws))
	}
	deadline := time.Now().Add(10 * time.Second)
	var ppid string
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(ppidFile)
		if err == nil {
			ppid = strings.TrimSpace(string(b))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ppid != strconv.Itoa(os.Getpid()) {
		t.Fatalf("orphan was adopted by %q, want this process %d", ppid, os.Getpid())
	}
	// The orphan exits right after writing; give the reaper a moment.
	for time.Now().Before(deadline) {
		if len(Zombies(t, os.Getpid())) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("zombie children remain: %v", Zombies(t, os.Getpid()))
}

func TestForkExecAfterClose(t *testing.T) {
	r, err := Start(zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.ForkExec("/bin/true", []string{"true"}, attr()); err == nil {
		t.Fatal("ForkExec after Close succeeded")
	}
}

func TestForkExecMissingBinary(t *testing.T) {
	r := startReaper(t)
	_, _, err := r.ForkExec("/nonexistent/volboot-test", []string{"x"}, attr())
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/volboot-test") {
		t.Fatalf("err = %v, want one naming the binary", err)
	}
}

// Zombies lists the pids of zombie processes whose parent is ppid.
func Zombies(t *testing.T, ppid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) S ppid ...": comm may hold spaces and parens.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if f[0] == "Z" && f[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	return out
}
