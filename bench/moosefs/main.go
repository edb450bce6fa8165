// Command moosefs benchmarks volboot's install path where our users' volume
// is, on the real MooseFS rig (integration/mfsrig), at each round-trip time
// asked for (issue 16), side by side with pip and uv on the same mount:
//
//	P11  first install of the F5-shaped synthetic stack: volboot (probe,
//	     verify, unpack, bytecode, generation; durability auto, which is
//	     close on MooseFS) vs `pip install --no-deps --no-index` into a
//	     venv on the mount vs `uv pip install --no-deps --offline
//	     --compile-bytecode` (cold cache on local disk, copied onto the
//	     mount); seconds, ms per installed file (the wheels' files) and
//	     the ratios. Goals at 2 ms: >= 25x pip, <= 2 ms per file.
//	P5   the second generation after one wheel changes vs uv installing
//	     the same set into a new venv from its warm cache, on the mount
//	     and on local disk. Goal: <= 0.8 s on local disk at scale 1, and no
//	     slower than uv.
//	P12  the in-sync boot on the mount: bench/sync run with its -dir there
//	     (volboot's in-sync sync vs pip's no-op; goal <= 30 ms).
//
// Usage: go run ./bench/moosefs [-scale 0.25] [-rtts 2ms,5ms] [-pip=false] [-uv off] [-p5=false] [-p12=false]
//
// It needs root and Debian's moosefs packages (the rig's requirements);
// uv is taken from -uv, then ~/.cache/volboot/uv-*/bin/uv (volboot lock
// installs it there), then PATH, and its side is skipped with a note when
// there is none. The MooseFS counters of each side (master round trips,
// creates, lookups) are printed from the mount's .stats file, with the CPU
// time the installer, the master, the chunkserver and the mount used, so a
// miss can be explained by operation counts and by which process was busy,
// not by guesses.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/integration/mfsrig"
)

type options struct {
	scale  float64
	rtts   []time.Duration
	pip    bool
	p12    bool
	p5     bool
	uv     string
	python string
	keep   bool
}

func main() {
	var o options
	rtts := flag.String("rtts", "2ms,5ms", "round-trip times from the client to the master, one rig each")
	flag.Float64Var(&o.scale, "scale", 0.25, "size of the F5-shaped stack; 1 is >= 150 wheels, 40k files, 2 GB")
	flag.BoolVar(&o.pip, "pip", true, "run pip's side of P11 (about 70 ms per file at 2 ms RTT: 20 minutes at scale 0.25)")
	flag.BoolVar(&o.p12, "p12", true, "run P12 (bench/sync on the mount)")
	flag.StringVar(&o.uv, "uv", "", "the uv binary (default: volboot lock's, then PATH; off: no uv side)")
	flag.BoolVar(&o.p5, "p5", true, "run P5 (the second generation, on local disk and on each mount)")
	flag.StringVar(&o.python, "python", "python3", "the interpreter")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory")
	flag.Parse()
	for _, s := range strings.Split(*rtts, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintln(os.Stderr, "-rtts:", err)
			os.Exit(2)
		}
		o.rtts = append(o.rtts, d)
	}
	switch o.uv {
	case "":
		o.uv = findUV()
	case "off":
		o.uv = ""
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/moosefs:", err)
		os.Exit(1)
	}
}

func findUV() string {
	home, _ := os.UserHomeDir()
	if ms, _ := filepath.Glob(filepath.Join(home, ".cache", "volboot", "uv-*", "bin", "uv")); len(ms) > 0 {
		return ms[len(ms)-1]
	}
	if p, err := exec.LookPath("uv"); err == nil {
		return p
	}
	return ""
}

func run(o options) error {
	if err := mfsrig.Available(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "volboot-bench-moosefs-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(tmp)
	}
	ctx := context.Background()
	info, err := interp.Probe(ctx, o.python, interp.Cache{}, nil)
	if err != nil {
		return err
	}
	// The wheels live on local disk for every side, as downloads would
	// have landed before an install.
	wdir := filepath.Join(tmp, "wheels")
	for _, d := range []string{wdir, wdir + "2"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	ws, err := synthstack.Write(wdir, synthstack.F5Shaped(o.scale), 2)
	if err != nil {
		return err
	}
	files := 0
	for _, w := range ws {
		files += w.Files
	}
	changedAt := len(ws) / 2
	spec := ws[changedAt].Spec
	spec.Version += ".post1"
	spec.Seed++
	cws, err := synthstack.Write(wdir+"2", []synthstack.Spec{spec}, 1)
	if err != nil {
		return err
	}
	ws2 := slices.Clone(ws)
	ws2[changedAt] = cws[0]
	fmt.Printf("F5-shaped stack at scale %.2f: %d wheels, %d files; python %s; uv %s; %d CPUs\n",
		o.scale, len(ws), files, info.Version, orNone(o.uv), nprocs())

	// P5 on local disk first, while nothing else runs.
	local := filepath.Join(tmp, "local")
	if o.p5 {
		if err := p5(ctx, o, info, local, ws, ws2, "local disk"); err != nil {
			return err
		}
	}
	for _, rtt := range o.rtts {
		if err := onRig(ctx, o, info, tmp, rtt, ws, ws2, files); err != nil {
			return err
		}
	}
	return nil
}

func onRig(ctx context.Context, o options, info *interp.Info, tmp string, rtt time.Duration, ws, ws2 []synthstack.Wheel, files int) error {
	rigDir := filepath.Join(tmp, "rig-"+rtt.String())
	if err := os.MkdirAll(rigDir, 0o755); err != nil {
		return err
	}
	rig, err := mfsrig.Start(ctx, mfsrig.Options{Dir: rigDir, Clients: 1, RTT: rtt})
	if err != nil {
		return fmt.Errorf("MooseFS rig: %w", err)
	}
	defer rig.Close()
	mount := rig.Clients()[0].Mount
	fmt.Printf("\n== MooseFS, client %s from its master (%s)\n", rtt, mount)

	// P11: first installs.
	var tv, tp, tu time.Duration
	vol := filepath.Join(mount, "volboot")
	st0 := takeSnapshot(rig)
	tv, err = volbootInstall(ctx, info, vol, "gen1", ws)
	if err != nil {
		return err
	}
	st1 := takeSnapshot(rig)
	fmt.Printf("P11 volboot: %.1f s, %.2f ms per installed file; MooseFS: %s\n", tv.Seconds(), perFile(tv, files), st1.diff(st0))
	if o.uv != "" {
		uvCache := filepath.Join(tmp, "uvcache-"+rtt.String())
		st0 = takeSnapshot(rig)
		tu, err = uvInstall(o, filepath.Join(mount, "uv"), uvCache, ws)
		if err != nil {
			return err
		}
		st1 = takeSnapshot(rig)
		fmt.Printf("P11 uv:      %.1f s, %.2f ms per installed file; MooseFS: %s\n", tu.Seconds(), perFile(tu, files), st1.diff(st0))
		fmt.Printf("P11 uv / volboot: %.1fx\n", tu.Seconds()/tv.Seconds())
	} else {
		fmt.Println("P11 uv: skipped (-uv off, or no uv binary: pass -uv, or run volboot lock once to install it)")
	}
	if o.pip {
		st0 = takeSnapshot(rig)
		tp, err = pipInstall(o, filepath.Join(mount, "pip"), ws)
		if err != nil {
			return err
		}
		st1 = takeSnapshot(rig)
		fmt.Printf("P11 pip:     %.1f s, %.2f ms per installed file; MooseFS: %s\n", tp.Seconds(), perFile(tp, files), st1.diff(st0))
		fmt.Printf("P11 pip / volboot: %.1fx (goal >= 25x at 2 ms)\n", tp.Seconds()/tv.Seconds())
	} else {
		fmt.Println("P11 pip: skipped (-pip=false)")
	}
	fmt.Printf("P11 goal at 2 ms: <= 2 ms per installed file; volboot %.2f\n", perFile(tv, files))

	// P5 on the mount: the second generation beside the first.
	if o.p5 {
		if err := p5(ctx, o, info, filepath.Join(mount, "p5"), ws, ws2, "MooseFS "+rtt.String()); err != nil {
			return err
		}
	}
	if o.p12 {
		if err := p12(o, filepath.Join(mount, "p12")); err != nil {
			return err
		}
	}
	return nil
}

// volbootInstall is volboot's whole path, as bench/install's: probe the
// interpreter through the volume's cache, then unpack what the store
// lacks while the generation links what it holds, one scheduler shared.
func volbootInstall(ctx context.Context, info *interp.Info, volume, id string, ws []synthstack.Wheel) (time.Duration, error) {
	start := time.Now()
	if err := os.MkdirAll(volume, 0o755); err != nil {
		return 0, err
	}
	pi, err := interp.Probe(ctx, info.Executable, interp.Cache{Dir: bootstrap.Paths{Root: volume}.InterpCache(), Write: true}, nil)
	if err != nil {
		return 0, err
	}
	ops := fileops.New(fileops.DefaultJobs(volume), 2)
	st := &wheel.Store{Dir: venv.StoreDir(volume), Ops: ops,
		Compiler: &wheel.Compiler{Python: pi.Executable, CacheTag: pi.CacheTag, Workers: max(nprocs(), 2)}}
	b := &venv.Builder{Python: pi, Ops: ops}
	vws := make([]venv.Wheel, len(ws))
	for i, w := range ws {
		vws[i] = venv.Wheel{Source: wheel.Source{Path: w.Path, Filename: w.Filename, SHA256: w.SHA256}, Requested: i%3 == 0}
	}
	if _, err := venv.Install(ctx, st, b, venv.EnvDir(volume, id), vws); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func paths(ws []synthstack.Wheel) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Path
	}
	return out
}

// uvInstall makes a venv at dir (untimed) and times uv installing the
// wheels into it, bytecode compiled, its cache at cache.
func uvInstall(o options, dir, cache string, ws []synthstack.Wheel) (time.Duration, error) {
	if out, err := exec.Command(o.uv, "venv", "-q", "--python", o.python, dir).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("uv venv: %v: %s", err, out)
	}
	args := append([]string{"pip", "install", "-q", "--python", filepath.Join(dir, "bin", "python"), "--no-deps", "--offline", "--compile-bytecode"}, paths(ws)...)
	cmd := exec.Command(o.uv, args...)
	cmd.Env = append(os.Environ(), "UV_CACHE_DIR="+cache, "UV_LINK_MODE=copy")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("uv pip install: %v: %s", err, out)
	}
	return time.Since(start), nil
}

// pipInstall makes a venv at dir (untimed) and times pip installing the
// wheels into it (pip compiles bytecode by default).
func pipInstall(o options, dir string, ws []synthstack.Wheel) (time.Duration, error) {
	if out, err := exec.Command(o.python, "-m", "venv", dir).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("python -m venv: %v: %s", err, out)
	}
	args := append([]string{"-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check"}, paths(ws)...)
	start := time.Now()
	if out, err := exec.Command(filepath.Join(dir, "bin", "python"), args...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pip install: %v: %s", err, out)
	}
	return time.Since(start), nil
}

// p5 builds a first generation (untimed) and then times the second, which
// changes one wheel, against uv installing the second set into a new venv
// from the cache its first install warmed.
func p5(ctx context.Context, o options, info *interp.Info, dir string, ws, ws2 []synthstack.Wheel, where string) error {
	vol := filepath.Join(dir, "volboot")
	if _, err := volbootInstall(ctx, info, vol, "gen1", ws); err != nil {
		return err
	}
	t2, err := volbootInstall(ctx, info, vol, "gen2", ws2)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("P5 %s: volboot's second generation (one wheel changed) %.3f s", where, t2.Seconds())
	if o.uv != "" {
		// uv's cache is on local disk, as a worker's would be.
		cache, err := os.MkdirTemp("", "volboot-bench-uvcache-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(cache)
		if _, err := uvInstall(o, filepath.Join(dir, "uv1"), cache, ws); err != nil {
			return err
		}
		tu, err := uvInstall(o, filepath.Join(dir, "uv2"), cache, ws2)
		if err != nil {
			return err
		}
		line += fmt.Sprintf(", uv from its warm cache %.3f s: uv / volboot %.1fx (goal >= 1)", tu.Seconds(), tu.Seconds()/t2.Seconds())
	}
	fmt.Println(line)
	return nil
}

// p12 runs bench/sync with its work directory on the mount.
func p12(o options, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := exec.Command("go", "run", "./bench/sync", "-dir", dir, "-scale", strconv.FormatFloat(o.scale, 'f', -1, 64), "-runs", "10", "-pipruns", "2", "-python", o.python)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	fmt.Println("P12 in-sync boot on the mount (bench/sync; goal <= 30 ms):")
	return cmd.Run()
}

// mfsStats are counters of the mount's .stats file.
type mfsStats map[string]int64

func readStats(mount string) mfsStats {
	out := mfsStats{}
	f, err := os.Open(filepath.Join(mount, ".stats"))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

// snapshot is what explains an install's time on the rig, read before and
// after it: the mount's counters, the CPU each MooseFS process used, and
// the installer's (this process, where volboot runs, and its waited-for
// children: the bytecode compilers, uv, pip).
type snapshot struct {
	at        time.Time
	stats     mfsStats
	rig       map[string]time.Duration
	installer time.Duration
}

func takeSnapshot(rig *mfsrig.Rig) snapshot {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	cpu := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return snapshot{at: time.Now(), stats: readStats(rig.Clients()[0].Mount), rig: rig.CPU(), installer: cpu(self) + cpu(children)}
}

// diff names the counters that explain an install's time: requests to the
// master and the operations that cost one each; then the CPU seconds each
// process used, with its share of the wall time (a process near 100% of
// one core is the bound; all of them far below it, on an idle machine,
// means the install waited on round trips).
func (s snapshot) diff(before snapshot) string {
	var parts []string
	for _, k := range []string{"master.packets_sent", "fuse_ops.lookup.master", "fuse_ops.create", "fuse_ops.link", "fuse_ops.mkdir", "fuse_ops.getxattr", "fuse_ops.open", "fuse_ops.fsync", "fuse_ops.setattr"} {
		parts = append(parts, fmt.Sprintf("%s %d", strings.TrimPrefix(strings.TrimPrefix(k, "fuse_ops."), "master."), s.stats[k]-before.stats[k]))
	}
	wall := s.at.Sub(before.at)
	share := func(name string, d time.Duration) string {
		return fmt.Sprintf("%s %.1f s (%.0f%%)", name, d.Seconds(), 100*d.Seconds()/max(wall.Seconds(), 1e-9))
	}
	cpu := []string{share("installer", s.installer-before.installer)}
	names := make([]string, 0, len(s.rig))
	for name := range s.rig {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		cpu = append(cpu, share(name, s.rig[name]-before.rig[name]))
	}
	return strings.Join(parts, ", ") + "; CPU: " + strings.Join(cpu, ", ")
}

func perFile(d time.Duration, files int) float64 {
	return float64(d.Milliseconds()) / float64(max(files, 1))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func nprocs() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 1
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return max(n, 1)
}
