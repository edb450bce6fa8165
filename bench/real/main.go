// Command real is benchmark P14 (issue 22): the real F5 stack from PyPI,
// installed side by side by volboot, uv and pip from the same lock onto the
// same filesystem, first into nothing and then again after one package
// changed, on local disk and on the MooseFS rig (integration/mfsrig, one
// client -rtt from its master). It prints seconds and ratios beside the
// goals:
//
//	local disk:  volboot first install / uv first install     goal <= 1.0
//	MooseFS:     volboot first install                        goal <= 120 s (about uv / 7)
//
// The lock is the embedded one (manifests/pylock.f5-tts.toml, groups tts and
// asr: flash-attn's group needs compute capability 8.0, so volboot skips it
// here and the others are not asked for it). The sides:
//
//	volboot  volboot sync of a copy of the embedded manifest without its
//	         [[model]] tables (uv and pip install no models, and the hub is
//	         unreachable here); downloads go onto the volume, as always;
//	         bytecode, the sdist builds and the smoke check are part of it.
//	uv       uv venv, then uv pip sync pylock.toml --group tts --group asr
//	         --compile-bytecode (uv 0.13.9, the one `volboot lock` uses); its
//	         cache starts empty, on local disk (on MooseFS too: uv then
//	         copies every file onto the volume).
//	pip      python -m venv --without-pip, then pip 26 from a throwaway venv
//	         of its own: pip --python VENV install -r pylock.toml --group
//	         pylock.toml:tts --group pylock.toml:asr (pip compiles bytecode by
//	         default); its cache starts empty, on local disk. Onto MooseFS
//	         only with -pip-moosefs: it takes about 50 minutes there.
//
// The second install moves tqdm from 4.70.1 to 4.70.0 (a leaf every group
// uses): volboot builds a new generation, uv and pip replace one package.
//
// It needs PyPI, so `make bench` (offline) does not run it; `make
// bench-real` does. Every side downloads about 4.2 GB and installs about
// 8 GB; each side's files are removed when the next side starts (-keep
// keeps them), so the work directory needs about 25 GB free (checked).
//
// Usage: go run ./bench/real [-fs local,moosefs] [-tools volboot,uv,pip] [-pip-moosefs] [-rtt 2ms] [-dir DIR] [-keep]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/bench/benchbin"
	"github.com/volboot/volboot/integration/mfsrig"
	"github.com/volboot/volboot/lockgen"
)

type options struct {
	fs, tools       []string
	pipMoose        bool
	rtt             time.Duration
	dir, volboot    string
	python, uv, pip string
	manifest, lock  string
	keep            bool
	logs            string
}

func main() {
	var o options
	fs := flag.String("fs", "local,moosefs", "filesystems: local (a directory under -dir), moosefs (the rig)")
	tools := flag.String("tools", "volboot,uv,pip", "installers, in the order they run")
	flag.BoolVar(&o.pipMoose, "pip-moosefs", false, "also run pip onto MooseFS (about 50 minutes)")
	flag.DurationVar(&o.rtt, "rtt", mfsrig.DefaultRTT, "round trip between the MooseFS client and its master")
	flag.StringVar(&o.dir, "dir", "", "work directory's parent (default: the system's temporary directory); needs about 25 GB")
	flag.StringVar(&o.volboot, "volboot", "", "the volboot binary (default: build ./cmd/volboot)")
	flag.StringVar(&o.python, "python", "python3", "the interpreter every side installs for (3.11)")
	flag.StringVar(&o.uv, "uv", "", "uv 0.13.9 (default: on PATH at that version, else the copy `volboot lock` installed)")
	flag.StringVar(&o.pip, "pip", "pip==26.3", "the pip requirement installed into pip's throwaway venv")
	flag.StringVar(&o.manifest, "manifest", "manifests/f5-tts.toml", "the manifest (its [[model]] tables are left out)")
	flag.StringVar(&o.lock, "lock", "manifests/pylock.f5-tts.toml", "the lock every side installs")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory")
	flag.StringVar(&o.logs, "logs", "", "keep every install's output in this directory (default: in the work directory, removed with it)")
	flag.Parse()
	o.fs = strings.Split(*fs, ",")
	o.tools = strings.Split(*tools, ",")
	for _, f := range o.fs {
		if f != "local" && f != "moosefs" {
			fmt.Fprintf(os.Stderr, "bench/real: -fs %q: want local and/or moosefs\n", *fs)
			os.Exit(2)
		}
	}
	for _, t := range o.tools {
		if t != "volboot" && t != "uv" && t != "pip" {
			fmt.Fprintf(os.Stderr, "bench/real: -tools %q: want volboot, uv and/or pip\n", *tools)
			os.Exit(2)
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "bench/real: %v\n", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) { fmt.Printf("bench/real: "+format+"\n", args...) }

// neededBytes is what one side holds at its peak: the downloads (4.2 GB),
// the installed stack (8 GB, twice where a cache of unpacked wheels sits
// beside a copied venv) and room for the second install.
const neededBytes = 25 << 30

// The package the second install changes, and what it changes to (PyPI's
// JSON API for tqdm 4.70.0; every side checks the sha256).
const (
	changeName    = "tqdm"
	changeFrom    = "4.70.1"
	changeTo      = "4.70.0"
	changeToWheel = `{ url = "https://files.pythonhosted.org/packages/f9/1c/01bfd571a64e7f270e6bab5e33777debe0edc56759233ce84f27dec92d14/tqdm-4.70.0-py3-none-any.whl", size = 80184, hashes = { sha256 = "7f585706bfddbdebf89daac705b2dfcc16890130727d3197ca62c732b4310953" } }`
)

type result struct {
	fs, tool      string
	first, second time.Duration
}

func run(o options) error {
	tmp, err := benchbin.Workdir(o.dir, "volboot-bench-real-")
	if err != nil {
		return err
	}
	if o.keep {
		say("keeping %s", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	if err := enoughSpace(tmp); err != nil {
		return err
	}
	bin, err := benchbin.Volboot(tmp, o.volboot)
	if err != nil {
		return err
	}
	python, err := realPython(o.python)
	if err != nil {
		return err
	}
	uv := o.uv
	if uv == "" {
		if uv, err = findUV(); err != nil {
			return err
		}
	}
	if o.logs == "" {
		o.logs = filepath.Join(tmp, "logs")
	}
	if err := os.MkdirAll(o.logs, 0o755); err != nil {
		return err
	}
	inputs, err := writeInputs(filepath.Join(tmp, "inputs"), o.manifest, o.lock)
	if err != nil {
		return err
	}
	say("lock %s (groups tts, asr); second install: %s %s -> %s; python %s; uv %s", o.lock, changeName, changeFrom, changeTo, python, uv)

	var results []result
	var failed []string
	for _, fs := range o.fs {
		for _, tool := range o.tools {
			if fs == "moosefs" && tool == "pip" && !o.pipMoose {
				say("moosefs pip: skipped (about 50 minutes; -pip-moosefs runs it)")
				continue
			}
			side := &side{o: o, bin: bin, python: python, uv: uv, in: inputs, work: filepath.Join(tmp, fs+"-"+tool)}
			r, err := side.run(fs, tool)
			if err != nil {
				// The other sides still run: one side's failure is a
				// figure too.
				say("%s %s: FAILED: %v", fs, tool, err)
				failed = append(failed, fs+" "+tool)
				continue
			}
			results = append(results, r)
			say("%s %s: first %.1f s, second %.1f s", fs, tool, r.first.Seconds(), r.second.Seconds())
		}
	}
	report(results)
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// enoughSpace refuses to start where one side cannot fit.
func enoughSpace(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	free := uint64(st.Bavail) * uint64(st.Bsize)
	if free < neededBytes {
		return fmt.Errorf("%s has %.1f GB free; one side needs about %.0f GB (downloads, the installed stack, its cache): pass -dir on a larger disk",
			dir, float64(free)/1e9, float64(neededBytes)/1e9)
	}
	say("%s: %.1f GB free, about %.0f GB needed at a time", dir, float64(free)/1e9, float64(neededBytes)/1e9)
	return nil
}

// realPython resolves python (a pyenv shim, say) to the interpreter
// itself, so every side installs for the same one.
func realPython(python string) (string, error) {
	out, err := exec.Command(python, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return "", fmt.Errorf("run %s: %w", python, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// findUV returns uv at lockgen.UVVersion: on PATH, else the copy `volboot
// lock` installs under the user's cache directory.
func findUV() (string, error) {
	var candidates []string
	if p, err := exec.LookPath("uv"); err == nil {
		candidates = append(candidates, p)
	}
	if cache, err := os.UserCacheDir(); err == nil {
		candidates = append(candidates, filepath.Join(cache, "volboot", "uv-"+lockgen.UVVersion, "bin", "uv"))
	}
	for _, c := range candidates {
		out, err := exec.Command(c, "--version").Output()
		if err == nil && strings.HasPrefix(string(out), "uv "+lockgen.UVVersion+" ") {
			return c, nil
		}
	}
	return "", fmt.Errorf("no uv %s on PATH or in the volboot cache: run `volboot lock` once (it installs it), or pass -uv", lockgen.UVVersion)
}

// inputs are the files every side installs from.
type inputs struct {
	manifest     string // the manifest without models, [lock] naming lock1
	lock1, lock2 string // pylock.toml in two directories: the lock, and the lock after the change
}

func writeInputs(dir, manifest, lock string) (*inputs, error) {
	m, err := os.ReadFile(manifest)
	if err != nil {
		return nil, err
	}
	l, err := os.ReadFile(lock)
	if err != nil {
		return nil, err
	}
	l2, err := changeOne(l)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", lock, err)
	}
	in := &inputs{manifest: filepath.Join(dir, "volboot.toml"), lock1: filepath.Join(dir, "1", "pylock.toml"), lock2: filepath.Join(dir, "2", "pylock.toml")}
	for path, data := range map[string][]byte{in.manifest: withoutModels(m), in.lock1: l, in.lock2: l2} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// withoutModels drops every [[model]] table of a manifest: from its header
// to the next table header that is not another model's.
func withoutModels(m []byte) []byte {
	var out []string
	skipping := false
	for _, line := range strings.Split(string(m), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			skipping = t == "[[model]]"
		}
		if !skipping {
			out = append(out, line)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

// changeOne rewrites the lock's entry of changeName from changeFrom to
// changeTo, wheel only.
func changeOne(lock []byte) ([]byte, error) {
	blocks := strings.Split(string(lock), "\n\n")
	head := fmt.Sprintf("[[packages]]\nname = %q\nversion = %q\n", changeName, changeFrom)
	for i, b := range blocks {
		if !strings.HasPrefix(b, head) {
			continue
		}
		var keep []string
		for _, line := range strings.Split(b, "\n") {
			switch {
			case strings.HasPrefix(line, "version = "):
				keep = append(keep, fmt.Sprintf("version = %q", changeTo))
			case strings.HasPrefix(line, "sdist = "), strings.HasPrefix(line, "    { url"):
			case line == "wheels = [":
				keep = append(keep, line, "    "+changeToWheel+",")
			default:
				keep = append(keep, line)
			}
		}
		blocks[i] = strings.Join(keep, "\n")
		return []byte(strings.Join(blocks, "\n\n")), nil
	}
	return nil, fmt.Errorf("no entry %s %s to change: pick another package in bench/real", changeName, changeFrom)
}

// side is one installer on one filesystem.
type side struct {
	o                 options
	bin, python, uv   string
	in                *inputs
	work              string // local scratch: logs, caches, pip's own venv
	target            string // where the install goes
	cleanup           func()
	uvCache, pipCache string
	fs                string
	pipTool, targetPy string
}

func (s *side) run(fs, tool string) (result, error) {
	r := result{fs: fs, tool: tool}
	s.fs = fs
	if err := os.MkdirAll(s.work, 0o755); err != nil {
		return r, err
	}
	defer func() {
		if s.cleanup != nil {
			s.cleanup()
		}
		if !s.o.keep {
			os.RemoveAll(s.work)
		}
	}()
	switch fs {
	case "local":
		s.target = filepath.Join(s.work, "target")
	case "moosefs":
		rig, err := mfsrig.Start(context.Background(), mfsrig.Options{Dir: s.work, Clients: 1, RTT: s.o.rtt})
		if err != nil {
			return r, fmt.Errorf("MooseFS rig (or -fs local): %w", err)
		}
		s.cleanup = func() {
			if err := rig.Close(); err != nil {
				say("closing the rig: %v", err)
			}
		}
		s.target = filepath.Join(rig.Clients()[0].Mount, tool)
		say("%s %s: MooseFS through a client %s from its master", fs, tool, s.o.rtt)
	}
	if err := os.MkdirAll(s.target, 0o755); err != nil {
		return r, err
	}
	s.uvCache, s.pipCache = filepath.Join(s.work, "uv-cache"), filepath.Join(s.work, "pip-cache")
	s.targetPy = filepath.Join(s.target, "venv", "bin", "python")
	if tool == "pip" {
		if err := s.installPip(); err != nil {
			return r, err
		}
	}
	var err error
	if r.first, err = s.install(tool, "first", s.in.lock1); err != nil {
		return r, err
	}
	if err := s.check(tool, changeFrom); err != nil {
		return r, err
	}
	if r.second, err = s.install(tool, "second", s.in.lock2); err != nil {
		return r, err
	}
	return r, s.check(tool, changeTo)
}

// installPip makes pip's throwaway venv (untimed).
func (s *side) installPip() error {
	s.pipTool = filepath.Join(s.work, "pip-tool")
	if out, err := exec.Command(s.python, "-m", "venv", s.pipTool).CombinedOutput(); err != nil {
		return fmt.Errorf("make pip's venv: %v\n%s", err, out)
	}
	cmd := exec.Command(filepath.Join(s.pipTool, "bin", "pip"), "install", "--disable-pip-version-check", "-q", s.o.pip)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install %s: %v\n%s", s.o.pip, err, out)
	}
	return nil
}

// install runs one timed install with the lock at lock and returns its
// wall time; its output goes to a log in the work directory.
func (s *side) install(tool, which, lock string) (time.Duration, error) {
	var steps [][]string
	env := append(os.Environ(), "UV_CACHE_DIR="+s.uvCache, "UV_NO_CONFIG=1", "UV_PYTHON_DOWNLOADS=never",
		"PIP_CACHE_DIR="+s.pipCache, "PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_NO_INPUT=1")
	venvDir := filepath.Join(s.target, "venv")
	switch tool {
	case "volboot":
		steps = append(steps, []string{s.bin, "sync", "--volume", s.target, "--manifest", s.in.manifest, "--lock", lock, "--python", s.python})
		env = append(env, "VOLBOOT_LOG_FORMAT=json", "VOLBOOT_CREATE_VOLUME=1")
	case "uv":
		if which == "first" {
			steps = append(steps, []string{s.uv, "venv", "--python", s.python, venvDir})
		}
		steps = append(steps, []string{s.uv, "pip", "sync", lock, "--python", s.targetPy, "--group", "tts", "--group", "asr", "--compile-bytecode"})
	case "pip":
		if which == "first" {
			steps = append(steps, []string{s.python, "-m", "venv", "--without-pip", venvDir})
		}
		steps = append(steps, []string{filepath.Join(s.pipTool, "bin", "pip"), "--python", s.targetPy, "install", "-r", lock,
			"--group", lock + ":tts", "--group", lock + ":asr"})
	}
	logPath := filepath.Join(s.o.logs, s.fs+"-"+tool+"-"+which+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	// Nothing dirty from before (the last side's deletes above all: ext4
	// pays for recently freed inodes in dirty blocks) lands in this one.
	unix.Sync()
	t0 := time.Now()
	for _, argv := range steps {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = s.work, env, logf, logf
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("%s install (%s): %v; the end of %s:\n%s", which, strings.Join(argv, " "), err, logPath, tail(logPath, 20))
		}
	}
	return time.Since(t0), nil
}

// check: the environment imports the changed package at the version the
// lock gave it (a cheap sign the install is the lock's).
func (s *side) check(tool, version string) error {
	py := s.targetPy
	if tool == "volboot" {
		py = filepath.Join(s.target, "venv", "bin", "python") // the volume's link to its current generation
	}
	out, err := exec.Command(py, "-c", "import importlib.metadata as m; print(m.version('tqdm'))").CombinedOutput()
	if err != nil {
		return fmt.Errorf("check the environment: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != version {
		return fmt.Errorf("after the install, %s is %s, not %s", changeName, got, version)
	}
	return nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// report prints every side's figures, the ratios against uv and pip, and
// the goals.
func report(results []result) {
	find := func(fs, tool string) *result {
		for i := range results {
			if results[i].fs == fs && results[i].tool == tool {
				return &results[i]
			}
		}
		return nil
	}
	fmt.Println("bench/real: P14, the real F5 stack (lock of 247 packages, groups tts and asr), seconds")
	fmt.Printf("%-8s %-8s %10s %10s\n", "fs", "tool", "first", "second")
	for _, r := range results {
		fmt.Printf("%-8s %-8s %10.1f %10.1f\n", r.fs, r.tool, r.first.Seconds(), r.second.Seconds())
	}
	for _, fs := range []string{"local", "moosefs"} {
		v := find(fs, "volboot")
		if v == nil {
			continue
		}
		for _, other := range []string{"uv", "pip"} {
			if b := find(fs, other); b != nil {
				fmt.Printf("%s: volboot / %s: first %.2fx, second %.2fx (%s / volboot: first %.2fx)\n", fs, other,
					v.first.Seconds()/b.first.Seconds(), v.second.Seconds()/b.second.Seconds(), other, b.first.Seconds()/v.first.Seconds())
			}
		}
	}
	if v, u := find("local", "volboot"), find("local", "uv"); v != nil && u != nil {
		fmt.Printf("goal, local disk: volboot first / uv first = %.2fx (goal <= 1.0): %s\n", v.first.Seconds()/u.first.Seconds(), met(v.first <= u.first))
	}
	if v := find("moosefs", "volboot"); v != nil {
		fmt.Printf("goal, MooseFS: volboot first %.1f s (goal <= 120 s): %s\n", v.first.Seconds(), met(v.first <= 2*time.Minute))
	}
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}
