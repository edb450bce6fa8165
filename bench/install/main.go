// Command install benchmarks volboot's native wheel installation against
// pip, python -m venv and unzip, side by side on the same machine and
// filesystem, and prints ratios (issue 5):
//
//	(a) a venv with pip and setuptools from their wheels vs python -m venv
//	    (which installs the same bundled wheels through pip); bytecode is
//	    compiled on both sides;
//	(b) a generated stack shaped like the F5-TTS closure vs
//	    pip install --no-deps --no-index of the same files, and vs unzip run
//	    on both cores over the same wheels;
//	(c) a second generation that changes one wheel vs the first built from
//	    an empty store.
//
// Usage: go run ./bench/install [-scale 1] [-only abc] [-dir DIR] [-sync files|fs|none]
//
// The stack is generated into a temporary directory (never committed) and
// removed afterwards unless -keep. `sync` runs (untimed) before every timed
// phase so no phase pays for another's dirty pages.
//
// No phase's output is deleted until every phase has run. ext4 without a
// journal (this machine's root filesystem) skips, on every inode it
// allocates, each inode freed in the last 5 minutes whose inode-table
// block is dirty (fs/ext4/ialloc.c, recently_deleted), rescanning them
// from the start of the group: after 100k files are deleted, the next
// 100k creates cost several times their CPU. Deleting between phases
// made every later phase (pip, unzip) pay for the one before it.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap"
	"github.com/volboot/volboot/bootstrap/fetch"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
)

type options struct {
	python string
	scale  float64
	only   string
	dir    string
	keep   bool
	runs   int
	sync   wheel.SyncMode
	jobs   int
	perDir int
	log    *zap.Logger
	noPip  bool
	quick  bool
}

func main() {
	var o options
	var syncName string
	flag.StringVar(&o.python, "python", "python3", "target interpreter")
	flag.Float64Var(&o.scale, "scale", 1, "size of the synthetic stack for (b) and (c); 1 is >= 150 wheels, 40k files, 2 GB")
	flag.StringVar(&o.only, "only", "abc", "which benchmarks to run")
	flag.StringVar(&o.dir, "dir", "", "work directory (default: a new temporary directory)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory")
	flag.IntVar(&o.runs, "runs", 3, "runs of (a) per side (the median is compared)")
	flag.StringVar(&syncName, "sync", "auto", "volboot durability: auto (the default: fs or files by filesystem), files, fs or none")
	flag.IntVar(&o.jobs, "jobs", 0, "volboot file operations in flight (0: default)")
	flag.IntVar(&o.perDir, "perdir", 2, "volboot file operations on one directory at once (a sync uses 2)")
	verbose := flag.Bool("v", false, "log volboot's phase timings")
	flag.BoolVar(&o.noPip, "no-pip", false, "(b): skip the pip baseline (for quick iterations)")
	flag.BoolVar(&o.quick, "quick", false, "(b): run only volboot's install (for quick iterations)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of volboot's side here")
	flag.Parse()
	o.log = zap.NewNop()
	if *verbose {
		cfg := zap.NewDevelopmentConfig()
		o.log, _ = cfg.Build()
	}
	var err error
	if o.sync, err = wheel.ParseSyncMode(syncName); err != nil {
		fmt.Fprintln(os.Stderr, "-sync:", err)
		os.Exit(2)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(context.Background(), o); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench/install:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	dir := o.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "volboot-bench-install-")
		if err != nil {
			return err
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if !o.keep {
		defer func() {
			os.RemoveAll(dir)
			fmt.Printf("\nremoved %s; on ext4 without a journal, creates pay for these deletes for about 5 minutes: wait that long before timing anything else (or use -keep)\n", dir)
		}()
	}
	if err := clearOutputs(dir); err != nil {
		return err
	}
	info, err := interp.Probe(ctx, o.python, interp.Cache{}, nil)
	if err != nil {
		return err
	}
	fmt.Printf("python %s (%s), %d CPUs, work dir %s, durability %s (resolved here: %s)\n", info.Version, info.Executable, nprocs(), dir, o.sync, o.sync.Resolve(dir))
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		fmt.Printf("cannot drop the page cache before each phase (%v): phases run with whatever cache their predecessors left\n", err)
	}
	if strings.Contains(o.only, "a") {
		if err := benchVenv(ctx, o, dir, info); err != nil {
			return fmt.Errorf("(a): %w", err)
		}
	}
	if strings.ContainsAny(o.only, "bc") {
		if err := benchStack(ctx, o, dir, info); err != nil {
			return fmt.Errorf("(b)/(c): %w", err)
		}
	}
	return nil
}

func nprocs() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	var n int
	fmt.Sscan(string(out), &n)
	return n
}

// settle puts the machine in the same state before every timed phase:
// nothing dirty (sync), the page cache emptied where this process may
// (root: /proc/sys/vm/drop_caches), then the phase's input wheels read
// back in. Without it each phase ran with the page cache the phases
// before it had filled: once the cache is full every new page is
// reclaimed first, and a phase's time depended on its place in the run.
func settle(inputs ...string) {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0)
	for _, p := range inputs {
		if f, err := os.Open(p); err == nil {
			io.Copy(io.Discard, f)
			f.Close()
		}
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func sha256File(p string) (string, error) {
	return shaOf(p)
}

// install is volboot's whole path for a set of wheels: probe the
// interpreter (through the volume's probe cache, as the reconciler does: a
// first boot misses it, a second hits it), then venv.Install: unpack what
// the store lacks (verify, write, compile) while the generation links
// what it holds, as the reconciler's speculative build does.
func install(ctx context.Context, o options, python string, volume, id string, srcs []wheel.Source, requested func(int) bool) (time.Duration, error) {
	start := time.Now()
	info, err := interp.Probe(ctx, python, interp.Cache{Dir: bootstrap.Paths{Root: volume}.InterpCache(), Write: true}, nil)
	if err != nil {
		return 0, err
	}
	jobs := o.jobs
	if jobs <= 0 {
		jobs = fileops.DefaultJobs(volume)
	}
	// One scheduler for the store and the generation, as a sync has.
	ops := fileops.New(jobs, o.perDir)
	st := &wheel.Store{Dir: venv.StoreDir(volume), Sync: o.sync, Ops: ops, Logger: o.log,
		Compiler: &wheel.Compiler{Python: info.Executable, CacheTag: info.CacheTag, Workers: max(nprocs(), 2)}}
	probed := time.Now()
	ws := make([]venv.Wheel, len(srcs))
	for i, src := range srcs {
		ws[i] = venv.Wheel{Source: src, Requested: requested(i)}
	}
	b := &venv.Builder{Python: info, Sync: o.sync, Ops: ops, Logger: o.log}
	if _, err := venv.Install(ctx, st, b, venv.EnvDir(volume, id), ws); err != nil {
		return 0, err
	}
	o.log.Debug("install phases", zap.Duration("probe", probed.Sub(start)), zap.Duration("install", time.Since(probed)))
	return time.Since(start), nil
}

func timeCmd(name string, args ...string) (time.Duration, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "PIP_DISABLE_PIP_VERSION_CHECK=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args[:min(len(args), 6)], " "), err, tailOf(string(out)))
	}
	return time.Since(start), nil
}

func tailOf(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

// (a) pip + setuptools.
func benchVenv(ctx context.Context, o options, dir string, info *interp.Info) error {
	out, err := exec.Command(info.Executable, "-I", "-c", "import ensurepip,os;print(os.path.dirname(ensurepip.__file__))").Output()
	if err != nil {
		return fmt.Errorf("ensurepip: %w", err)
	}
	bundled := filepath.Join(strings.TrimSpace(string(out)), "_bundled")
	ws, _ := filepath.Glob(filepath.Join(bundled, "*.whl"))
	if len(ws) == 0 {
		return fmt.Errorf("no wheels in %s", bundled)
	}
	var srcs []wheel.Source
	var names []string
	for _, w := range ws {
		sha, err := sha256File(w)
		if err != nil {
			return err
		}
		srcs = append(srcs, wheel.Source{Path: w, Filename: filepath.Base(w), SHA256: sha})
		names = append(names, filepath.Base(w))
	}
	fmt.Printf("\n(a) venv with %s\n", strings.Join(names, " + "))
	var ours, theirs []time.Duration
	for i := 0; i < o.runs; i++ {
		settle(ws...)
		vol := filepath.Join(dir, fmt.Sprintf("a-vol-%d", i))
		d, err := install(ctx, o, info.Executable, vol, "gen", srcs, func(int) bool { return true })
		if err != nil {
			return err
		}
		ours = append(ours, d)
		settle(ws...)
		pv := filepath.Join(dir, fmt.Sprintf("a-venv-%d", i))
		d2, err := timeCmd(info.Executable, "-m", "venv", pv)
		if err != nil {
			return err
		}
		theirs = append(theirs, d2)
		fmt.Printf("  run %d: volboot %6.3fs   python -m venv %6.3fs\n", i+1, ours[i].Seconds(), theirs[i].Seconds())
		if i == 0 {
			// Sanity: the result works and matches what venv made.
			if out, err := exec.Command(filepath.Join(vol, ".volboot", "envs", "gen", "bin", "pip"), "--version").CombinedOutput(); err != nil {
				return fmt.Errorf("volboot's bin/pip --version: %v: %s", err, out)
			}
			a, _ := exec.Command("find", filepath.Join(vol, ".volboot", "envs", "gen"), "-name", "*.pyc").Output()
			b, _ := exec.Command("find", pv, "-name", "*.pyc").Output()
			fmt.Printf("  bytecode files: volboot %d, python -m venv %d\n", strings.Count(string(a), "\n"), strings.Count(string(b), "\n"))
		}
	}
	m1, m2 := median(ours), median(theirs)
	fmt.Printf("  median: volboot %.3fs, python -m venv %.3fs: ratio %.2fx (goal >= 2.5x)\n", m1.Seconds(), m2.Seconds(), m2.Seconds()/m1.Seconds())
	return nil
}

// (b) and (c): the synthetic stack.
func benchStack(ctx context.Context, o options, dir string, info *interp.Info) error {
	// Every phase's output stays until the end (see the package comment):
	// the wheels, volboot's volume, its unpack-only store, unzip's and
	// pip's trees are each about the stack's size, and bytecode adds some.
	if strings.Contains(o.only, "b") || strings.Contains(o.only, "c") {
		need := uint64(6 * 2.3e9 * o.scale)
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil && st.Bavail*uint64(st.Bsize) < need {
			return fmt.Errorf("%s has %s free; (b) and (c) at scale %.2f need about %s (use -dir elsewhere or a smaller -scale)",
				dir, fetch.FormatSize(int64(st.Bavail*uint64(st.Bsize))), o.scale, fetch.FormatSize(int64(need)))
		}
	}
	wdir := filepath.Join(dir, "wheels")
	os.MkdirAll(wdir, 0o755)
	start := time.Now()
	ws, err := writeStack(wdir, o.scale)
	if err != nil {
		return err
	}
	var files int
	var bytes, compressed int64
	var srcs []wheel.Source
	paths := make([]string, len(ws))
	for i, w := range ws {
		paths[i] = w.path
		files += w.files
		bytes += w.bytes
		st, _ := os.Stat(w.path)
		compressed += st.Size()
		srcs = append(srcs, wheel.Source{Path: w.path, Filename: w.filename, SHA256: w.sha})
	}
	fmt.Printf("\n(b) synthetic stack (scale %.2f): %d wheels, %d files, %.2f GB unpacked, %.2f GB of wheels (generated in %.1fs)\n",
		o.scale, len(ws), files, float64(bytes)/1e9, float64(compressed)/1e9, time.Since(start).Seconds())

	// volboot from an empty store: this is also (c)'s first generation.
	settle(paths...)
	volume := filepath.Join(dir, "b-vol")
	c0 := cpuNow()
	tv, err := install(ctx, o, info.Executable, volume, "gen1", srcs, func(i int) bool { return i%3 == 0 })
	if err != nil {
		return err
	}
	cv := cpuNow() - c0
	fmt.Printf("  volboot (probe + verify + unpack + compile + generation): %.2fs (%.1f CPU-s, its interpreter's included)\n", tv.Seconds(), cv.Seconds())

	if strings.Contains(o.only, "c") {
		// (c): one wheel changes (a new release of a medium wheel).
		i := len(ws) / 2
		changed := ws[i].spec
		changed.Version += ".post1"
		changed.Seed++
		cws, err := synthstack.Write(wdir, []synthstack.Spec{changed}, 1)
		if err != nil {
			return err
		}
		cp, csha := cws[0].Path, cws[0].SHA256
		srcs2 := slices.Clone(srcs)
		srcs2[i] = wheel.Source{Path: cp, Filename: cws[0].Filename, SHA256: csha}
		// The cache is kept: the second generation follows the first as a
		// manifest bump follows a boot on the same machine.
		exec.Command("sync").Run()
		t2, err := install(ctx, o, info.Executable, volume, "gen2", srcs2, func(i int) bool { return i%3 == 0 })
		if err != nil {
			return err
		}
		fmt.Printf("\n(c) second generation changing %s -> %s: %.3fs vs first from an empty store %.2fs: ratio %.1fx (goal >= 10x)\n",
			ws[i].filename, changed.Filename(), t2.Seconds(), tv.Seconds(), tv.Seconds()/t2.Seconds())
	}
	if !strings.Contains(o.only, "b") || o.quick {
		return nil
	}
	if out, err := exec.Command(filepath.Join(volume, ".volboot", "envs", "gen1", "bin", "python"), "-c", "import synth_torch, nvidia.synth_nvidia_cublas, synth_lib_003; print('ok')").CombinedOutput(); err != nil {
		return fmt.Errorf("the volboot generation does not import: %v: %s", err, out)
	}

	// volboot unpack only (verify + write, no bytecode, no generation), to
	// set beside unzip, which does neither.
	settle(paths...)
	st := &wheel.Store{Dir: filepath.Join(dir, "b-store-only"), Sync: o.sync, Jobs: o.jobs}
	start = time.Now()
	if _, err := st.Unpack(ctx, srcs...); err != nil {
		return err
	}
	tu := time.Since(start)

	// unzip on both cores: the wheels split into two size-balanced lists.
	settle(paths...)
	var lists [2][]string
	var sizes [2]int64
	for _, w := range ws { // biggest first
		k := 0
		if sizes[1] < sizes[0] {
			k = 1
		}
		lists[k] = append(lists[k], w.path)
		sizes[k] += w.bytes
	}
	var script strings.Builder
	for k, l := range lists {
		fmt.Fprintf(&script, "( for w in %s; do unzip -q -o \"$w\" -d %s/unzip%d || exit 1; done ) &\n", strings.Join(quoteAll(l), " "), dir, k)
	}
	script.WriteString("wait\n")
	tz, err := timeCmd("sh", "-c", script.String())
	if err != nil {
		return err
	}

	fmt.Printf("  unzip on 2 cores (no verification, no bytecode): %.2fs\n", tz.Seconds())
	fmt.Printf("  volboot unpack only (verify + write, no bytecode): %.2fs\n", tu.Seconds())
	fmt.Printf("  ratio volboot/unzip %.2fx (whole install), %.2fx (unpack only)\n", tv.Seconds()/tz.Seconds(), tu.Seconds()/tz.Seconds())
	if o.noPip {
		return nil
	}
	// pip into a fresh venv (created untimed).
	pv := filepath.Join(dir, "b-pip")
	if _, err := timeCmd(info.Executable, "-m", "venv", pv); err != nil {
		return err
	}
	settle(paths...)
	args := []string{"install", "--no-deps", "--no-index", "--no-cache-dir", "-q"}
	c0 = cpuNow()
	sorted := slices.Sorted(slices.Values(paths))
	tp, err := timeCmd(filepath.Join(pv, "bin", "pip"), append(args, sorted...)...)
	if err != nil {
		return err
	}
	cp := cpuNow() - c0
	fmt.Printf("  pip install --no-deps --no-index: %.2fs (%.1f CPU-s)\n", tp.Seconds(), cp.Seconds())
	fmt.Printf("  ratio pip/volboot %.2fx (goal >= 3x)\n", tp.Seconds()/tv.Seconds())
	return nil
}

// clearOutputs removes what an earlier run with -keep left in dir, but for
// the generated wheels, and warns: ext4 without a journal makes the next
// creates pay for these deletes for minutes (see the package comment).
func clearOutputs(dir string) error {
	var old []string
	for _, pat := range []string{"a-vol-*", "a-venv-*", "b-vol", "b-store-only", "unzip[0-9]", "b-pip"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		old = append(old, m...)
	}
	for _, p := range old {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("removing an earlier run's %s: %w", p, err)
		}
	}
	if len(old) > 0 {
		fmt.Printf("note: removed %d outputs of an earlier run in %s; on ext4 without a journal the creates of the next minutes pay for those deletes\n", len(old), dir)
	}
	return nil
}

func quoteAll(xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = "'" + strings.ReplaceAll(x, "'", `'\''`) + "'"
	}
	return out
}

func shaOf(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// cpuNow is the CPU time (user + system) of this process and of the
// children it has waited for (pip, the compile interpreter and its pool).
func cpuNow() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	d := func(tv syscall.Timeval) time.Duration { return time.Duration(tv.Nano()) }
	return d(self.Utime) + d(self.Stime) + d(kids.Utime) + d(kids.Stime)
}

// benchWheel is one wheel of the synthetic stack.
type benchWheel struct {
	spec                synthstack.Spec
	path, filename, sha string
	files               int
	bytes               int64
}

// writeStack generates the F5-TTS-shaped stack (the one bench/sync and the
// integration tests use), biggest wheels first.
func writeStack(dir string, scale float64) ([]benchWheel, error) {
	sws, err := synthstack.Write(dir, synthstack.F5Shaped(scale), 2)
	if err != nil {
		return nil, err
	}
	out := make([]benchWheel, 0, len(sws))
	for _, w := range sws {
		out = append(out, benchWheel{spec: w.Spec, path: w.Path, filename: w.Filename, sha: w.SHA256, files: w.Files, bytes: w.Unpacked})
	}
	slices.SortFunc(out, func(a, b benchWheel) int { return int(b.bytes - a.bytes) })
	return out, nil
}
