// Command supervise measures what volboot's supervisor costs a handler:
//
//   - start overhead: time from starting the supervisor to the handler's
//     first line of Python on stdout, against starting the same handler
//     directly (goal: at most 20 ms more);
//   - the supervisor's resident memory while it supervises (goal: at most
//     30 MiB).
//
// Runs alternate (direct, supervised, direct, ...) so machine load hits both
// alike. The supervisor is runtime/internal/testsupervisor (no bootstrap
// work: the in-sync case) until `volboot run` exists; pass --supervisor to
// measure another binary, with -supervisor-args for what goes before
// "-- CMD" (for volboot: "run --volume ... --manifest ...").
//
//	go run ./bench/supervise [-n 30] [-python python3] [-supervisor path] [-supervisor-args "..."]
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/volboot/volboot/bench/procmem"
)

const handlerPy = `print("first line", flush=True)
import signal
signal.sigwait([signal.SIGTERM, signal.SIGINT])
`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/supervise:", err)
		os.Exit(1)
	}
}

func run() error {
	n := flag.Int("n", 30, "runs of each kind")
	python := flag.String("python", "python3", "interpreter for the handler")
	supervisor := flag.String("supervisor", "", "supervisor binary (default: build runtime/internal/testsupervisor)")
	supArgs := flag.String("supervisor-args", "", `arguments before "--", space-separated (e.g. "run --volume /tmp/vol" for volboot)`)
	flag.Parse()

	dir, err := os.MkdirTemp("", "bench-supervise-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if *supervisor == "" {
		*supervisor = filepath.Join(dir, "testsupervisor")
		build := exec.Command("go", "build", "-o", *supervisor, "github.com/volboot/volboot/runtime/internal/testsupervisor")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building testsupervisor: %w", err)
		}
	}
	script := filepath.Join(dir, "handler.py")
	if err := os.WriteFile(script, []byte(handlerPy), 0o644); err != nil {
		return err
	}
	// Resolve the real interpreter: python3 on PATH may be a shim script
	// (pyenv) whose own start-up would swamp what is measured.
	real, err := exec.Command(*python, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return fmt.Errorf("finding the interpreter behind %s: %w", *python, err)
	}
	py := strings.TrimSpace(string(real))
	handler := []string{py, "-u", script}
	prefix := append(append([]string{*supervisor}, strings.Fields(*supArgs)...), "--")
	fmt.Printf("supervisor: %s\n", strings.Join(prefix, " "))
	fmt.Printf("runs: %d of each kind, alternating\n\n", *n)

	r, err := compare(handler, prefix, *n)
	if err != nil {
		return err
	}
	fmt.Printf("handler: %s -u handler.py (prints its first line, then waits for SIGTERM)\n", py)
	over := r.print()
	fmt.Printf("  [goal: overhead <= 20 ms: %s]\n\n", verdict(over <= 20*time.Millisecond))

	// The same with a shell handler, whose start-up is too short to hide
	// anything: what the supervisor itself adds, with little noise.
	floor, err := compare([]string{"/bin/sh", "-c", "echo 'first line'; exec sleep 600"}, prefix, *n)
	if err != nil {
		return err
	}
	fmt.Printf("handler: /bin/sh -c \"echo 'first line'; exec sleep 600\" (the supervisor's own cost, little else)\n")
	floor.print()
	fmt.Println()

	rss := append(r.rss, floor.rss...)
	hwm := append(r.hwm, floor.hwm...)
	sort.Slice(rss, func(i, j int) bool { return rss[i] < rss[j] })
	sort.Slice(hwm, func(i, j int) bool { return hwm[i] < hwm[j] })
	fmt.Printf("supervisor RSS while supervising: median %.1f MiB, max %.1f MiB; peak (VmHWM) max %.1f MiB  [goal <= 30 MiB: %s]\n",
		mib(rss[len(rss)/2]), mib(rss[len(rss)-1]), mib(hwm[len(hwm)-1]), verdict(hwm[len(hwm)-1] <= 30<<20))
	return nil
}

// result holds one comparison's samples.
type result struct {
	direct, under []time.Duration
	rss, hwm      []int64
}

// compare runs handler directly and under the supervisor (prefix + handler)
// n times each, alternating, after one unmeasured run of each to warm the
// page cache.
func compare(handler, prefix []string, n int) (result, error) {
	var r result
	supervised := append(append([]string(nil), prefix...), handler...)
	if _, _, err := once(handler, false); err != nil {
		return r, err
	}
	if _, _, err := once(supervised, true); err != nil {
		return r, err
	}
	for i := 0; i < n; i++ {
		d, _, err := once(handler, false)
		if err != nil {
			return r, fmt.Errorf("direct run %d: %w", i, err)
		}
		r.direct = append(r.direct, d)
		d, mem, err := once(supervised, true)
		if err != nil {
			return r, fmt.Errorf("supervised run %d: %w", i, err)
		}
		r.under = append(r.under, d)
		r.rss = append(r.rss, mem.RSS)
		r.hwm = append(r.hwm, mem.Peak)
	}
	return r, nil
}

// print writes the table and returns the overhead the goal is judged on:
// under shared-machine load the medians drift, and the median of per-pair
// differences (each supervised run minus the direct run just before it) is
// the steadier figure.
func (r result) print() time.Duration {
	md, ms := median(r.direct), median(r.under)
	fmt.Printf("  %-32s %10s %10s %10s\n", "time to the first line", "median", "p90", "min")
	fmt.Printf("  %-32s %10s %10s %10s\n", "direct", ms3(md), ms3(pct(r.direct, 90)), ms3(pct(r.direct, 0)))
	fmt.Printf("  %-32s %10s %10s %10s\n", "under the supervisor", ms3(ms), ms3(pct(r.under, 90)), ms3(pct(r.under, 0)))
	var diffs []time.Duration
	for i := range r.direct {
		diffs = append(diffs, r.under[i]-r.direct[i])
	}
	over := median(diffs)
	fmt.Printf("  overhead: median of paired differences %s; difference of medians %s, of minima %s; ratio of medians %.3f\n",
		ms3(over), ms3(ms-md), ms3(pct(r.under, 0)-pct(r.direct, 0)), float64(ms)/float64(md))
	return over
}

// once starts argv, returns the time until its first stdout line and, for
// a supervisor, its memory once the handler is up; then stops it with
// SIGTERM and waits.
func once(argv []string, measureMem bool) (time.Duration, procmem.Mem, error) {
	var mem procmem.Mem
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = io.Discard
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, mem, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, mem, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	elapsed := time.Since(t0)
	if err != nil || line != "first line\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return 0, mem, fmt.Errorf("first line %q: %v", line, err)
	}
	if measureMem {
		// Let the supervisor settle into supervising before sampling.
		time.Sleep(100 * time.Millisecond)
		mem, err = procmem.Of(cmd.Process.Pid)
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return 0, mem, err
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return 0, mem, err
		}
	}
	return elapsed, mem, nil
}

func median(d []time.Duration) time.Duration { return pct(d, 50) }

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s) - 1) * p / 100
	return s[i]
}

func ms3(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
