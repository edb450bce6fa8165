// Package sdist builds wheels from source distributions (DESIGN.md §5.7):
// the locked sdists of packages that publish no wheel (three pure-Python
// setup.py projects in the F5 stack), built once per volume by the first
// worker that needs them.
//
// What a build is:
//   - The sdist is a file the caller has verified by its sha256. Extract
//     unpacks it into a throwaway directory, refusing anything that would
//     leave it (archive.go).
//   - The build environment is a throwaway venv holding exactly the
//     backend wheels the caller gives (taken from the lock, verified by
//     their sha256): volboot's own store and generation builder make it,
//     from a store of their own in the throwaway directory. No pip, no
//     index: nothing is downloaded during a build.
//   - The project's pyproject.toml names its backend and requirements
//     (PEP 517/518); a project without one is a setup.py project, built by
//     setuptools.build_meta:__legacy__. A static requirement the build
//     environment does not meet fails the build before it starts; one the
//     backend asks for at build time (get_requires_for_build_wheel) is
//     named when the build then fails.
//   - The backend runs in its own process group, under a time limit, with
//     an environment volboot makes rather than inherits: HOME and TMPDIR in
//     the throwaway directory, no index (PIP_NO_INDEX), proxies pointing at
//     a closed loopback port, and, where the kernel lets an unprivileged
//     process have one, a network namespace of its own with no interface up.
//     Compilers are shims that fail: volboot builds pure-Python sdists only,
//     since no worker should compile native code at boot. A build that needs
//     one fails with NeedsCompiler.
//   - The result is checked: one wheel, of the package and version the lock
//     names, with tags this interpreter accepts.
//
// Every failure is an *Error that says how to pin a wheel instead.
//
// Where the built wheel goes is the caller's business: the reconciler puts
// it into the store under Key, which names the sdist and everything the
// build depended on, so that it is built once per volume and interpreter.
package sdist

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"

	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/pep425"
	"github.com/volboot/volboot/bootstrap/pep440"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/venv"
	"github.com/volboot/volboot/bootstrap/wheel"
)

// FormatVersion is how volboot builds (the driver, the environment it
// gives the backend): part of every Key, so that a volboot that builds
// differently builds again rather than reuse another's wheels.
const FormatVersion = 1

// DefaultTimeout bounds one build when Builder.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// Backend is one wheel of the build environment.
type Backend struct {
	Name, Version string
	Source        wheel.Source // a verified wheel file
}

// Key names the wheel built from the sdist whose sha256 is sdistSHA by the
// interpreter whose identity (interp.Info.Identity) is given, with the
// backend wheels given: 64 hex digits, like a wheel's sha256, so that it
// names a store entry. Whatever could change the built wheel is in it;
// the backends' order is not.
func Key(sdistSHA, interpreter string, backend []Backend) string {
	lines := make([]string, 0, len(backend))
	for _, b := range backend {
		lines = append(lines, fmt.Sprintf("backend %s %s %s\n", pep508.NormalizeName(b.Name), b.Version, b.Source.SHA256))
	}
	sort.Strings(lines)
	h := sha256.New()
	fmt.Fprintf(h, "volboot-sdist-build %d\nsdist %s\ninterpreter %s\n", FormatVersion, strings.ToLower(sdistSHA), interpreter)
	for _, l := range lines {
		h.Write([]byte(l))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Source is a verified sdist to build, and the lock package it is for.
type Source struct {
	Path          string
	Name, Version string
}

// Result is a built wheel.
type Result struct {
	// Wheel is the wheel file, inside the builder's throwaway directory:
	// it is removed by Close.
	Wheel    string
	Filename string
	Took     time.Duration
}

// Kind says why a build failed.
type Kind int

const (
	// Failed: the backend failed (its output's last lines say why).
	Failed Kind = iota
	// NeedsCompiler: the build tried to compile native code.
	NeedsCompiler
	// MissingRequirement: the project needs a build requirement the build
	// environment lacks.
	MissingRequirement
	// TimedOut: the build ran past the time limit and was killed.
	TimedOut
	// BadArchive: the sdist could not be unpacked.
	BadArchive
	// BadWheel: the backend made something that is not a wheel of the
	// package for this interpreter.
	BadWheel
	// NoEnvironment: the build environment could not be made.
	NoEnvironment
)

// Error is a build that failed; its message ends saying how to pin a wheel
// instead.
type Error struct {
	Kind          Kind
	Name, Version string
	Detail        string
}

func (e *Error) Error() string {
	var what string
	switch e.Kind {
	case NeedsCompiler:
		what = "its sdist needs a compiler (native code), and volboot builds only pure-Python sdists: no worker compiles native code at boot"
	case MissingRequirement:
		what = "its sdist needs a build requirement the build environment lacks"
	case TimedOut:
		what = "building its sdist took too long and was stopped"
	case BadArchive:
		what = "its sdist cannot be unpacked"
	case BadWheel:
		what = "building its sdist did not make a wheel of it"
	case NoEnvironment:
		what = "the build environment could not be made"
	default:
		what = "building its sdist failed"
	}
	if e.Detail != "" {
		what += ": " + e.Detail
	}
	return what + "; " + PinAdvice(e.Name, e.Version)
}

// PinAdvice says how to give volboot a wheel instead of an sdist.
func PinAdvice(name, version string) string {
	spec := name
	if version != "" {
		spec += "==" + version
	}
	return fmt.Sprintf("pin a wheel instead: build one where a compiler and the network are at hand (pip wheel --no-deps %s), publish it, and add it to the lock as a [[packages.wheels]] entry of %s with its url (or a path beside the lock) and hashes.sha256", spec, name)
}

//go:embed driver.py
var driverPy []byte

// compilers are the programs a build finds as failing shims. setuptools
// and friends reach compilers through CC/CXX/LDSHARED or by these names.
var compilers = []string{"cc", "c++", "gcc", "g++", "clang", "clang++", "cpp", "ld", "nvcc", "gfortran", "rustc", "cargo"}

// noCompiler is what the shims print; a build whose output holds it tried
// to compile.
const noCompiler = "is not available to builds: volboot builds pure-Python sdists only"

// compilerNeeded matches what a build prints when it wanted a compiler the
// shims did not catch (an absolute path, a missing header).
var compilerNeeded = regexp.MustCompile(`(?i)` + regexp.QuoteMeta(noCompiler) +
	`|error: command '[^']*(cc|gcc|g\+\+|c\+\+|clang|clang\+\+|nvcc|ld)' failed` +
	`|unable to execute '?[^ ']*(cc|gcc|clang|nvcc)` +
	`|Python\.h: No such file` +
	`|can't find Rust compiler` +
	`|CMake must be installed|no CMAKE_C_COMPILER could be found`)

// deadProxy is where every proxy variable points: a loopback port nothing
// listens on, so a client that honours proxies reaches nothing.
const deadProxy = "http://127.0.0.1:9"

// SourceDateEpoch is the time stamp of every member of a built wheel
// (1980-01-01, zip's earliest): two builds of one sdist by one build
// environment make the same bytes.
const SourceDateEpoch = "315532800"

// Builder builds sdists into wheels. Its exported fields are read-only
// once Build was called; Build may be called concurrently. Close removes
// everything the builder made.
type Builder struct {
	Python  *interp.Info
	Backend []Backend
	// Env is the marker environment build requirements are evaluated in.
	Env pep508.Environment
	// Dir is where the throwaway directory is made; default os.TempDir().
	// Local disk is best: a build writes many small files, and nothing
	// of it but the wheel is kept.
	Dir string
	// Timeout bounds each build; default DefaultTimeout.
	Timeout time.Duration
	Logger  *zap.Logger
	// PATH is the search path builds get (the compiler shims come first);
	// default the process's own.
	PATH string

	mu       sync.Mutex
	root     string // the throwaway directory
	env      string // the build environment (a venv) inside it
	prepared bool
	prepErr  error
	seq      int
	noNetNS  bool // the kernel refused a network namespace once
}

func (b *Builder) logger() *zap.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return zap.NewNop()
}

// tempBase is the final name of the throwaway directory's temporary name
// (atomicfile.TempName): the name says whose it is, so a later builder on
// this host removes those of processes that are gone.
const tempBase = "volboot-build"

// prepare makes the throwaway directory and the build environment, once.
func (b *Builder) prepare(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.prepared {
		return b.prepErr
	}
	b.prepared = true
	b.prepErr = b.makeEnvironment(ctx)
	return b.prepErr
}

func (b *Builder) makeEnvironment(ctx context.Context) error {
	if b.Python == nil {
		return errors.New("sdist: Builder.Python is nil")
	}
	dir := b.Dir
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	RemoveStale(dir, b.logger())
	b.root = atomicfile.TempName(filepath.Join(dir, tempBase))
	if err := os.Mkdir(b.root, 0o700); err != nil {
		return err
	}
	start := time.Now()
	if err := os.WriteFile(filepath.Join(b.root, "driver.py"), driverPy, 0o644); err != nil {
		return err
	}
	shims := filepath.Join(b.root, "nocc")
	if err := os.Mkdir(shims, 0o755); err != nil {
		return err
	}
	for _, c := range compilers {
		script := fmt.Sprintf("#!/bin/sh\necho \"volboot: %s %s\" >&2\nexit 1\n", c, noCompiler)
		if err := os.WriteFile(filepath.Join(shims, c), []byte(script), 0o755); err != nil {
			return err
		}
	}
	// The backend wheels are unpacked into a store of the throwaway
	// directory's own (verified against RECORD, no bytecode: the backend
	// runs a few times) and linked into a venv there.
	st := &wheel.Store{Dir: filepath.Join(b.root, "store"), Sync: wheel.SyncNone, Logger: b.logger()}
	if err := os.Mkdir(st.Dir, 0o755); err != nil {
		return err
	}
	wheels := make([]venv.Wheel, len(b.Backend))
	for i, w := range b.Backend {
		wheels[i] = venv.Wheel{Source: w.Source, Requested: true}
	}
	vb := &venv.Builder{Python: b.Python, Creator: "volboot build environment", Sync: wheel.SyncNone, Logger: b.logger()}
	b.env = filepath.Join(b.root, "env")
	if _, err := venv.Install(ctx, st, vb, b.env, wheels); err != nil {
		return fmt.Errorf("build environment: %w", err)
	}
	b.logger().Debug("made the build environment", zap.String("dir", b.env), zap.Int("wheels", len(wheels)), zap.Duration("took", time.Since(start)))
	return nil
}

// Close removes the throwaway directory. Wheels Build returned are gone
// with it.
func (b *Builder) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.root == "" {
		return nil
	}
	err := os.RemoveAll(b.root)
	b.root = ""
	return err
}

// Build builds src into a wheel. An error is an *Error, or the context's
// error when ctx ended (the caller is stopping: nothing is wrong with the
// sdist).
func (b *Builder) Build(ctx context.Context, src Source) (*Result, error) {
	fail := func(k Kind, format string, args ...any) (*Result, error) {
		return nil, &Error{Kind: k, Name: src.Name, Version: src.Version, Detail: fmt.Sprintf(format, args...)}
	}
	if err := b.prepare(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return fail(NoEnvironment, "%v", err)
	}
	b.mu.Lock()
	b.seq++
	dir := filepath.Join(b.root, fmt.Sprintf("build-%d", b.seq))
	b.mu.Unlock()
	for _, d := range []string{"src", "out", "home", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// A build's files go once it is done; only the wheel is kept (Close).
	defer func() {
		for _, d := range []string{"src", "home", "tmp"} {
			os.RemoveAll(filepath.Join(dir, d))
		}
	}()
	project, err := Extract(src.Path, filepath.Join(dir, "src"), Limits{})
	if err != nil {
		return fail(BadArchive, "%v", err)
	}
	bs, err := ReadBuildSystem(project)
	if err != nil {
		return fail(Failed, "%v", err)
	}
	if missing := b.unmet(bs.Requires); len(missing) > 0 {
		return fail(MissingRequirement, "%s (pyproject.toml build-system.requires), which the build environment (%s) lacks: add %s to [build].requirements in the manifest and lock it",
			strings.Join(missing, ", "), b.has(), strings.Join(missing, ", "))
	}
	start := time.Now()
	out := filepath.Join(dir, "out")
	infoFile := filepath.Join(dir, "info.json")
	output, runErr := b.run(ctx, project, dir, bs, out, infoFile)
	var info struct {
		Requires []string `json:"requires"`
		Wheel    string   `json:"wheel"`
	}
	if data, err := os.ReadFile(infoFile); err == nil {
		json.Unmarshal(data, &info)
	}
	if runErr != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(runErr, context.DeadlineExceeded) {
			return fail(TimedOut, "still running after %s ([build].timeout in the manifest)", b.timeout())
		}
		tail := lastLines(output, 12, 1500)
		b.logger().Debug("sdist build output", zap.String("package", src.Name), zap.String("output", string(output)))
		if compilerNeeded.Match(output) {
			return fail(NeedsCompiler, "%s", compilerLines(output))
		}
		var reqs []pep508.Requirement
		for _, s := range info.Requires {
			if r, err := pep508.ParseRequirement(s); err == nil {
				reqs = append(reqs, r)
			}
		}
		if missing := b.unmet(reqs); len(missing) > 0 {
			return fail(MissingRequirement, "the backend asked for %s, which the build environment (%s) lacks: add it to [build].requirements in the manifest and lock it; its output ends: %s",
				strings.Join(missing, ", "), b.has(), tail)
		}
		return fail(Failed, "%v; its output ends: %s", runErr, tail)
	}
	name := info.Wheel
	if name == "" || filepath.Base(name) != name {
		return fail(BadWheel, "the backend named no wheel file (%q)", name)
	}
	if err := b.checkWheel(src, name); err != nil {
		return fail(BadWheel, "%v", err)
	}
	path := filepath.Join(out, name)
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
		return fail(BadWheel, "the backend said it made %s, which is not there", name)
	}
	return &Result{Wheel: path, Filename: name, Took: time.Since(start)}, nil
}

func (b *Builder) timeout() time.Duration {
	if b.Timeout > 0 {
		return b.Timeout
	}
	return DefaultTimeout
}

// checkWheel: the built wheel must be of the package and version the lock
// names, and installable here.
func (b *Builder) checkWheel(src Source, name string) error {
	wn, err := pep425.ParseWheelFilename(name)
	if err != nil {
		return err
	}
	if wn.NormalizedName() != pep508.NormalizeName(src.Name) {
		return fmt.Errorf("it made %s, a wheel of %s", name, wn.Distribution)
	}
	if src.Version != "" {
		want, err1 := pep440.Parse(src.Version)
		got, err2 := pep440.Parse(wn.Version)
		if err1 != nil || err2 != nil || want.Compare(got) != 0 {
			return fmt.Errorf("it made %s, version %s, but the lock says %s", name, wn.Version, src.Version)
		}
	}
	if _, ok := pep425.NewRanking(b.Python.Tags()).Rank(wn.Tags); !ok {
		return fmt.Errorf("it made %s, whose tags this interpreter does not accept", name)
	}
	return nil
}

// unmet lists the requirements (whose markers hold) that no backend wheel
// satisfies.
func (b *Builder) unmet(reqs []pep508.Requirement) []string {
	var out []string
	for _, r := range reqs {
		if r.Marker != nil {
			if holds, err := r.Marker.Evaluate(b.Env); err == nil && !holds {
				continue
			}
		}
		ok := false
		for _, w := range b.Backend {
			if pep508.NormalizeName(w.Name) != pep508.NormalizeName(r.Name) {
				continue
			}
			v, err := pep440.Parse(w.Version)
			if err == nil && r.Specifier.ContainsPrereleases(v, true) {
				ok = true
			}
		}
		if !ok {
			s := r.Name
			if !r.Specifier.IsEmpty() {
				s += r.Specifier.String()
			}
			out = append(out, s)
		}
	}
	return out
}

// has names the build environment's packages.
func (b *Builder) has() string {
	if len(b.Backend) == 0 {
		return "empty"
	}
	var s []string
	for _, w := range b.Backend {
		s = append(s, w.Name+" "+w.Version)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// run runs the backend in project and returns its output (the last 64 KiB).
func (b *Builder) run(ctx context.Context, project, dir string, bs *BuildSystem, out, infoFile string) ([]byte, error) {
	tctx, cancel := context.WithTimeout(ctx, b.timeout())
	defer cancel()
	backendPath, _ := json.Marshal(append([]string{}, bs.BackendPath...))
	python := filepath.Join(b.env, "bin", "python")
	shims := filepath.Join(b.root, "nocc")
	path := b.PATH
	if path == "" {
		path = os.Getenv("PATH")
	}
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	env := []string{
		"PATH=" + shims + ":" + filepath.Join(b.env, "bin") + ":" + path,
		"HOME=" + filepath.Join(dir, "home"),
		"TMPDIR=" + filepath.Join(dir, "tmp"), "TMP=" + filepath.Join(dir, "tmp"), "TEMP=" + filepath.Join(dir, "tmp"),
		"VIRTUAL_ENV=" + b.env,
		"LANG=C.UTF-8",
		"SOURCE_DATE_EPOCH=" + SourceDateEpoch,
		"PYTHONNOUSERSITE=1", "PYTHONDONTWRITEBYTECODE=1", "PYTHONHASHSEED=0",
		"PIP_NO_INDEX=1", "PIP_CONFIG_FILE=/dev/null", "PIP_NO_INPUT=1", "PIP_DISABLE_PIP_VERSION_CHECK=1",
		"CC=" + filepath.Join(shims, "cc"), "CXX=" + filepath.Join(shims, "c++"), "CPP=" + filepath.Join(shims, "cpp"),
		"LDSHARED=" + filepath.Join(shims, "cc") + " -shared", "LDCXXSHARED=" + filepath.Join(shims, "c++") + " -shared",
		"NO_PROXY=", "no_proxy=",
	}
	for _, v := range []string{"http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "ALL_PROXY"} {
		env = append(env, v+"="+deadProxy)
	}
	var output tailBuffer
	output.max = 64 << 10
	start := func(netns bool) (*exec.Cmd, error) {
		cmd := exec.CommandContext(tctx, python, "-I", filepath.Join(b.root, "driver.py"), bs.Backend, string(backendPath), out, infoFile)
		cmd.Dir = project
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = &output, &output
		attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if netns {
			uid, gid := os.Getuid(), os.Getgid()
			attr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET
			attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
			attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
		}
		cmd.SysProcAttr = attr
		// On the time limit or the caller's end: the whole process
		// group, not just the interpreter (setup.py may have started
		// others).
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		return cmd, cmd.Start()
	}
	b.mu.Lock()
	netns := !b.noNetNS
	b.mu.Unlock()
	cmd, err := start(netns)
	if err != nil && netns && netnsRefused(err) {
		b.logger().Debug("no network namespace for sdist builds here; they run with dead proxies and no index instead", zap.Error(err))
		b.mu.Lock()
		b.noNetNS = true
		b.mu.Unlock()
		cmd, err = start(false)
	}
	if err != nil {
		return nil, err
	}
	err = cmd.Wait()
	// Whatever the backend started and left behind goes with it.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if err != nil && tctx.Err() != nil {
		if ctx.Err() != nil {
			return output.bytes(), ctx.Err()
		}
		return output.bytes(), context.DeadlineExceeded
	}
	return output.bytes(), err
}

// netnsRefused reports whether starting a process in new user and network
// namespaces failed because this kernel or container does not allow them
// (seccomp, a limit of zero, no CONFIG_USER_NS).
func netnsRefused(err error) bool {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return false
	}
	switch errno {
	case syscall.EPERM, syscall.EINVAL, syscall.ENOSPC, syscall.EUSERS, syscall.ENOSYS, syscall.EACCES:
		return true
	}
	return false
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}

// compilerLines are the lines of out that say what wanted compiling and
// what failed for want of a compiler (the last three).
func compilerLines(out []byte) string {
	var lines []string
	for _, l := range bytes.Split(out, []byte("\n")) {
		s := strings.TrimSpace(string(l))
		if compilerNeeded.MatchString(s) || strings.HasPrefix(s, "building '") {
			if len(s) > 300 {
				s = s[:300] + "…"
			}
			lines = append(lines, s)
		}
	}
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return strings.Join(lines, " | ")
}

// lastLines is the last n non-empty lines of out, joined with " | ", at
// most max bytes (the end kept).
func lastLines(out []byte, n, max int) string {
	var lines []string
	for _, l := range bytes.Split(out, []byte("\n")) {
		if s := strings.TrimSpace(string(l)); s != "" {
			lines = append(lines, s)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	s := strings.Join(lines, " | ")
	if len(s) > max {
		s = "…" + s[len(s)-max:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

// RemoveStale removes the throwaway directories in dir of builders on this
// host whose process is gone (a worker killed mid-build). Nothing in them
// was ever taken for complete: the wheel a build makes is only used by the
// process that made it.
func RemoveStale(dir string, logger *zap.Logger) {
	if logger == nil {
		logger = zap.NewNop()
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	host, _ := os.Hostname()
	host = atomicfile.HostToken(host)
	for _, e := range ents {
		ti, ok := atomicfile.ParseTempName(e.Name())
		if !ok || ti.Final != tempBase || ti.Host != host || !gone(ti) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			logger.Debug("could not remove a dead builder's directory", zap.String("dir", p), zap.Error(err))
			continue
		}
		logger.Info("removed a dead builder's throwaway directory", zap.String("dir", p))
	}
}

// gone reports whether the process of this host that made ti is gone.
func gone(ti atomicfile.TempInfo) bool {
	if ti.PID == os.Getpid() {
		return !atomicfile.Mine(ti)
	}
	return errors.Is(syscall.Kill(ti.PID, 0), syscall.ESRCH)
}
