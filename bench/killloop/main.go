// Command killloop benchmarks a first boot that keeps being killed (issue
// 23, DESIGN.md §5.4): RunPod kills a worker that is not healthy within its
// init timeout, so on a fresh volume a first install is killed, maybe many
// times, and each next worker must go on from where the last one stopped.
//
// On the real MooseFS rig (integration/mfsrig, one client -rtt from its
// master; -local for a local directory instead) it syncs the F5-shaped
// synthetic stack (-scale) once undisturbed onto a fresh volume, timing it
// (T); then, for each kill interval (-pcts, in per cent of T), on a fresh
// volume, starts syncs and SIGKILLs each, with everything it started, at
// that interval, until one finishes on its own. Before each loop it runs
// the undisturbed sync again (alternating, so both see the same machine
// load) and compares the loop with that run. It prints the tries, the sum
// of their times and the ratio
//
//	sum of the tries / one undisturbed first sync    goal <= 1.2
//
// and checks that the loop converged to the undisturbed generation with
// `status --verify` clean.
//
// Usage: go run ./bench/killloop [-scale 0.05] [-rtt 2ms] [-pcts 25,50] [-local | -volumes DIR] [-dir DIR] [-keep]
//
// The rig needs root, ip(8) and Debian's moosefs-master, -chunkserver and
// -client packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/volboot/volboot/bench/benchbin"
	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/integration/mfsrig"
	"github.com/volboot/volboot/integration/testindex"
)

type options struct {
	volboot, python, dir string
	scale                float64
	rtt                  time.Duration
	pcts                 []int
	local, keep          bool
	maxTries             int
	volumes              string
	logs                 string
}

func main() {
	var o options
	flag.StringVar(&o.volboot, "volboot", "", "the volboot binary (default: build ./cmd/volboot)")
	flag.StringVar(&o.python, "python", "python3", "the interpreter")
	flag.Float64Var(&o.scale, "scale", 0.05, "stack size (synthstack.F5Shaped); 1 is >= 150 wheels, 40k files, 2 GB unpacked")
	flag.DurationVar(&o.rtt, "rtt", 2*time.Millisecond, "round trip between the MooseFS client and its master")
	pcts := flag.String("pcts", "25,50", "kill intervals, in per cent of the undisturbed first sync")
	flag.BoolVar(&o.local, "local", false, "a local directory instead of the MooseFS rig")
	flag.StringVar(&o.dir, "dir", "", "where to put the stack, the rig and local volumes (default: the system's temporary directory)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	flag.IntVar(&o.maxTries, "max-tries", 60, "give up after this many tries of one loop")
	flag.StringVar(&o.logs, "logs", "", "write each sync's log (run with -v) to this directory")
	flag.StringVar(&o.volumes, "volumes", "", "put the volumes here (a MooseFS mount of `go run ./integration/mfsrig/cmd/mfsrig`, say) instead of on a rig of its own")
	flag.Parse()
	for _, p := range strings.Split(*pcts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n <= 0 || n >= 100 {
			fmt.Fprintf(os.Stderr, "bench/killloop: -pcts %q: want per cents between 1 and 99\n", *pcts)
			os.Exit(2)
		}
		o.pcts = append(o.pcts, n)
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "bench/killloop: %v\n", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf("bench/killloop: "+format+"\n", args...) }

func run(o options) error {
	tmp, err := benchbin.Workdir(o.dir, "volboot-bench-killloop-")
	if err != nil {
		return err
	}
	if o.keep {
		say("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	bin, err := benchbin.Volboot(tmp, o.volboot)
	if err != nil {
		return err
	}

	wheels := filepath.Join(tmp, "wheels")
	if err := os.MkdirAll(wheels, 0o755); err != nil {
		return err
	}
	ws, err := synthstack.Write(wheels, synthstack.F5Shaped(o.scale), 2)
	if err != nil {
		return err
	}
	n, files, size, unpacked := synthstack.Stats(ws)
	say("F5-shaped stack (scale %g): %d wheels, %d files, %.2f GB of wheels, %.2f GB unpacked", o.scale, n, files, float64(size)/1e9, float64(unpacked)/1e9)
	index := testindex.New()
	defer index.Close()
	if err := index.AddWheelDir(wheels); err != nil {
		return err
	}
	srv := httptest.NewServer(index)
	defer srv.Close()
	manifest := filepath.Join(tmp, "work", "volboot.toml")
	if err := writeManifest(manifest, ws, srv.URL); err != nil {
		return err
	}

	base := filepath.Join(tmp, "local")
	where := "local directory " + base
	switch {
	case o.volumes != "":
		base = filepath.Join(o.volumes, filepath.Base(tmp))
		where = base
	case !o.local:
		if err := os.MkdirAll(filepath.Join(tmp, "rig"), 0o755); err != nil {
			return err
		}
		rig, err := mfsrig.Start(context.Background(), mfsrig.Options{Dir: filepath.Join(tmp, "rig"), Clients: 1, RTT: o.rtt})
		if err != nil {
			return fmt.Errorf("MooseFS rig (or pass -local): %w", err)
		}
		defer rig.Close()
		base = filepath.Join(rig.Clients()[0].Mount, "killloop")
		where = fmt.Sprintf("MooseFS through a client %s from its master", o.rtt)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	say("volumes on %s", where)

	vols := 0
	fresh := func() string {
		vols++
		return filepath.Join(base, fmt.Sprintf("vol-%d", vols))
	}
	sy := &syncer{bin: bin, manifest: manifest, python: o.python, logs: o.logs}
	for _, pct := range o.pcts {
		full, gen, err := sy.undisturbed(fresh())
		if err != nil {
			return err
		}
		say("undisturbed first sync: %s (generation %s)", full.Round(time.Millisecond), gen)
		vol := fresh()
		interval := full * time.Duration(pct) / 100
		var sum time.Duration
		var tries []string
		for try := 1; ; try++ {
			if try > o.maxTries {
				return fmt.Errorf("killed every %s (%d%%): no convergence after %d tries: %s", interval, pct, o.maxTries, strings.Join(tries, ", "))
			}
			killed, took, out, err := sy.killAfter(vol, interval)
			if err != nil {
				return fmt.Errorf("try %d: %v\n%s", try, err, out)
			}
			sum += took
			if !killed {
				tries = append(tries, took.Round(time.Millisecond).String()+" (finished)")
				break
			}
			tries = append(tries, took.Round(time.Millisecond).String())
		}
		if err := sy.check(vol, gen); err != nil {
			return fmt.Errorf("after the loop killed every %d%%: %v", pct, err)
		}
		say("killed every %s (%d%% of it): %d tries: %s", interval.Round(time.Millisecond), pct, len(tries), strings.Join(tries, ", "))
		say("killed every %d%%: sum of the tries %s / undisturbed %s = %.2fx (goal <= 1.2)", pct, sum.Round(time.Millisecond), full.Round(time.Millisecond), float64(sum)/float64(full))
	}
	return nil
}

// writeManifest writes the manifest and lock of ws: one required group
// naming every wheel.
func writeManifest(manifest string, ws []synthstack.Wheel, base string) error {
	if err := os.MkdirAll(filepath.Dir(manifest), 0o755); err != nil {
		return err
	}
	var reqs []string
	var entries []synthstack.Entry
	for _, w := range ws {
		reqs = append(reqs, w.Spec.Name+"=="+w.Spec.Version)
		entries = append(entries, w.Entry("core", base+testindex.FileURLPath(w.Filename)))
	}
	if err := os.WriteFile(manifest, synthstack.Manifest("bench-killloop", "pylock.toml", []synthstack.Group{{Name: "core", Required: true, Requirements: reqs}}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(filepath.Dir(manifest), "pylock.toml"), synthstack.Lock(entries), 0o644)
}

type syncer struct {
	bin, manifest, python string
	logs                  string // a directory for each sync's log, or ""
	n                     int
}

// save keeps one sync's output in the logs directory, between lines in
// the log's own format giving when the process was started and when it
// ended (or was killed), so that the time before its first line and after
// its last is seen too.
func (s *syncer) save(what, out string, start, end time.Time) {
	if s.logs == "" {
		return
	}
	s.n++
	stamp := func(t time.Time, msg string) string {
		return fmt.Sprintf("{\"level\":\"info\",\"ts\":%q,\"logger\":\"bench\",\"msg\":%q}\n", t.UTC().Format(time.RFC3339Nano), msg)
	}
	os.MkdirAll(s.logs, 0o755)
	os.WriteFile(filepath.Join(s.logs, fmt.Sprintf("%02d-%s.log", s.n, what)), []byte(stamp(start, "bench: started")+out+stamp(end, "bench: "+what)), 0o644)
}

func (s *syncer) command(vol string, args ...string) *exec.Cmd {
	if s.logs != "" && args[0] == "sync" {
		args = append(args, "-v")
	}
	cmd := exec.Command(s.bin, append(args, "--volume", vol, "--manifest", s.manifest, "--python", s.python)...)
	cmd.Env = append(os.Environ(), "VOLBOOT_LOG_FORMAT=json", "VOLBOOT_CREATE_VOLUME=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// undisturbed syncs a fresh volume to the end.
func (s *syncer) undisturbed(vol string) (time.Duration, string, error) {
	t0 := time.Now()
	out, err := s.command(vol, "sync").CombinedOutput()
	took := time.Since(t0)
	s.save("undisturbed", string(out), t0, t0.Add(took))
	if err != nil {
		return 0, "", fmt.Errorf("undisturbed sync: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if id, ok := strings.CutPrefix(line, "generation "); ok {
			return took, strings.TrimSpace(id), nil
		}
	}
	return 0, "", fmt.Errorf("undisturbed sync printed no generation:\n%s", out)
}

// killAfter starts a sync and SIGKILLs its process group after d, as a
// container dies; killed is false when it finished first.
func (s *syncer) killAfter(vol string, d time.Duration) (killed bool, took time.Duration, out string, err error) {
	cmd := s.command(vol, "sync")
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = &buf, &buf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return false, 0, "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		took := time.Since(t0)
		s.save("finished", buf.String(), t0, t0.Add(took))
		return false, took, buf.String(), err
	case <-time.After(d):
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	werr := <-done
	took = time.Since(t0)
	s.save("killed", buf.String(), t0, t0.Add(took))
	var ee *exec.ExitError
	if werr == nil || !errors.As(werr, &ee) {
		return false, took, buf.String(), werr // finished in the instant before the kill
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		return false, took, buf.String(), werr
	}
	return true, took, buf.String(), nil
}

// check: status --verify is clean and names generation gen.
func (s *syncer) check(vol, gen string) error {
	out, err := s.command(vol, "status", "--verify").CombinedOutput()
	if err != nil {
		return fmt.Errorf("status --verify: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), gen) {
		return fmt.Errorf("status --verify does not name generation %s:\n%s", gen, out)
	}
	return nil
}
