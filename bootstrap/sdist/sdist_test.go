package sdist

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/sdist/sdisttest"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/integration/testenv"
)

var (
	probeOnce sync.Once
	probed    *interp.Info
	probeErr  error
)

func python(t *testing.T) *interp.Info {
	t.Helper()
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sdist-probe-")
		if err != nil {
			probeErr = err
			return
		}
		defer os.RemoveAll(dir)
		probed, probeErr = interp.Probe(context.Background(), "python3", interp.Cache{Dir: dir, Write: true}, nil)
	})
	if probeErr != nil {
		testenv.Missing(t, "no usable python3: %v", probeErr)
	}
	return probed
}

// testBackend is setuptools and wheel wheels of this machine that build
// with its python3, offline (sdisttest.BackendWheels).
func testBackend(t *testing.T) []Backend {
	t.Helper()
	st, wh, err := sdisttest.BackendWheels(python(t).Executable)
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	var out []Backend
	for _, path := range []string{st, wh} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		base := filepath.Base(path)
		parts := strings.Split(base, "-")
		out = append(out, Backend{Name: parts[0], Version: parts[1], Source: wheel.Source{Path: path, Filename: base, SHA256: hex.EncodeToString(sum[:])}})
	}
	return out
}

func newBuilder(t *testing.T) *Builder {
	t.Helper()
	info := python(t)
	b := &Builder{Python: info, Backend: testBackend(t), Dir: t.TempDir(),
		Env: pep508.Environment{Values: map[string]string{"python_version": info.PyVersion(), "sys_platform": "linux"}}}
	t.Cleanup(func() { b.Close() })
	return b
}

func writeSdist(t *testing.T, s sdisttest.Spec) Source {
	t.Helper()
	sd, err := sdisttest.Write(t.TempDir(), s)
	if err != nil {
		t.Fatal(err)
	}
	return Source{Path: sd.Path, Name: s.Name, Version: s.Version}
}

// wheelFile reads one member of a built wheel.
func wheelFile(t *testing.T, path, member string) string {
	t.Helper()
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if f.Name == member {
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			data, _ := io.ReadAll(rc)
			return string(data)
		}
	}
	t.Fatalf("%s has no %s", path, member)
	return ""
}

func sha(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// A setup.py project builds into a wheel of its package, in an
// environment of its own: HOME and TMPDIR in the throwaway directory, no
// index, no proxy that leads anywhere, and no network. Two builds of one
// sdist make the same bytes.
func TestBuildSetupPy(t *testing.T) {
	b := newBuilder(t)
	// A server the build must not reach.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
			c.Close()
		}
	}()
	prelude := fmt.Sprintf(`import urllib.request, socket
def _reach(f):
    try:
        f()
        return "reached"
    except Exception as e:
        return "refused"
_http = _reach(lambda: urllib.request.urlopen("http://example.com/", timeout=3).read())
_sock = _reach(lambda: socket.create_connection(("127.0.0.1", %d), timeout=3).close())
with open(os.path.join("good_pkg", "_env.py"), "w") as _f:
    _f.write("HOME = %%r\nTMPDIR = %%r\nPIP_NO_INDEX = %%r\nHTTP = %%r\nSOCK = %%r\n" %% (os.environ.get("HOME"), os.environ.get("TMPDIR"), os.environ.get("PIP_NO_INDEX"), _http, _sock))
`, ln.Addr().(*net.TCPAddr).Port)
	src := writeSdist(t, sdisttest.Spec{Name: "good-pkg", Version: "1.0", Prelude: prelude})
	r, err := b.Build(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if r.Filename != "good_pkg-1.0-py3-none-any.whl" {
		t.Errorf("built %s", r.Filename)
	}
	env := wheelFile(t, r.Wheel, "good_pkg/_env.py")
	for _, want := range []string{"HOME = '" + b.root, "TMPDIR = '" + b.root, "PIP_NO_INDEX = '1'", "HTTP = 'refused'"} {
		if !strings.Contains(env, want) {
			t.Errorf("the build's environment: want %q in\n%s", want, env)
		}
	}
	if b.noNetNS {
		t.Logf("this kernel gives builds no network namespace; raw sockets reach loopback: %s", env)
	} else if !strings.Contains(env, "SOCK = 'refused'") {
		t.Errorf("a build in its own network namespace reached a loopback server:\n%s", env)
	}
	if got := wheelFile(t, r.Wheel, "good_pkg/__init__.py"); !strings.Contains(got, `VERSION = "1.0"`) {
		t.Errorf("the wheel's module: %q", got)
	}
	// Where the kernel gives no network namespace (a container under
	// Docker's seccomp profile), the dead proxies still stop HTTP.
	if !b.noNetNS {
		b.noNetNS = true
		r2, err := b.Build(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		if env := wheelFile(t, r2.Wheel, "good_pkg/_env.py"); !strings.Contains(env, "HTTP = 'refused'") || !strings.Contains(env, "PIP_NO_INDEX = '1'") {
			t.Errorf("without a network namespace:\n%s", env)
		}
	}
	first := sha(t, r.Wheel)

	// The same sdist again (a second worker on another host, say): the
	// same bytes, since every time stamp is SOURCE_DATE_EPOCH. The
	// environment file differs (paths), so build one without it.
	plain := writeSdist(t, sdisttest.Spec{Name: "plain", Version: "2.0"})
	r1, err := b.Build(context.Background(), plain)
	if err != nil {
		t.Fatal(err)
	}
	s1 := sha(t, r1.Wheel)
	b2 := newBuilder(t)
	r2, err := b2.Build(context.Background(), plain)
	if err != nil {
		t.Fatal(err)
	}
	if s2 := sha(t, r2.Wheel); s1 != s2 {
		t.Errorf("two builds of one sdist differ: %s and %s", s1, s2)
	}
	// Nothing of a build but its wheel stays; Close removes the rest.
	if _, err := os.Stat(r.Wheel); err != nil || first == "" {
		t.Fatal(err)
	}
	root := b.root
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left %s: %v", root, err)
	}
}

// A zip sdist and a pyproject.toml naming setuptools' modern backend
// build too.
func TestBuildZipAndPyproject(t *testing.T) {
	b := newBuilder(t)
	src := writeSdist(t, sdisttest.Spec{Name: "zipped", Version: "0.3", Zip: true,
		PyProject: "[build-system]\nrequires = [\"setuptools>=40.8.0\", \"wheel\"]\nbuild-backend = \"setuptools.build_meta\"\n"})
	r, err := b.Build(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if r.Filename != "zipped-0.3-py3-none-any.whl" {
		t.Errorf("built %s", r.Filename)
	}
}

func buildError(t *testing.T, err error, kind Kind, want ...string) {
	t.Helper()
	var be *Error
	if !errors.As(err, &be) {
		t.Fatalf("want an *Error, got %v", err)
	}
	if be.Kind != kind {
		t.Errorf("kind %d, want %d: %v", be.Kind, kind, err)
	}
	for _, w := range append(want, "pin a wheel instead", "[[packages.wheels]]", "hashes.sha256") {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error lacks %q: %v", w, err)
		}
	}
}

func TestBuildFails(t *testing.T) {
	b := newBuilder(t)
	src := writeSdist(t, sdisttest.Spec{Name: "broken", Version: "1.0", Prelude: sdisttest.Fail("this project cannot be built today")})
	_, err := b.Build(context.Background(), src)
	buildError(t, err, Failed, "this project cannot be built today", "pip wheel --no-deps broken==1.0")
}

// A C extension fails to build even on a machine with gcc: builds find
// failing compiler shims, since no worker compiles native code at boot.
func TestBuildNeedsCompiler(t *testing.T) {
	b := newBuilder(t)
	src := writeSdist(t, sdisttest.Spec{Name: "native", Version: "1.0", Extension: true})
	_, err := b.Build(context.Background(), src)
	buildError(t, err, NeedsCompiler, "needs a compiler")
}

// A requirement of pyproject.toml the build environment lacks fails the
// build before it runs, naming it.
func TestBuildMissingRequirement(t *testing.T) {
	b := newBuilder(t)
	src := writeSdist(t, sdisttest.Spec{Name: "hatched", Version: "1.0", Prelude: sdisttest.Fail("must not run"),
		PyProject: "[build-system]\nrequires = [\"hatchling>=1.0\", \"setuptools; python_version < '3'\"]\nbuild-backend = \"hatchling.build\"\n"})
	_, err := b.Build(context.Background(), src)
	buildError(t, err, MissingRequirement, "hatchling>=1.0", "[build].requirements")
	if strings.Contains(err.Error(), "must not run") || strings.Contains(err.Error(), "setuptools;") {
		t.Errorf("%v", err)
	}
	// A wheel of another package or version is refused.
	src = writeSdist(t, sdisttest.Spec{Name: "liar", Version: "1.0"})
	src.Version = "1.1"
	_, err = b.Build(context.Background(), src)
	buildError(t, err, BadWheel, "version 1.0, but the lock says 1.1")
}

// The time limit kills the build's whole process group; so does the
// caller's context, and then the error is the context's.
func TestBuildTimeoutKillsGroup(t *testing.T) {
	b := newBuilder(t)
	b.Timeout = 6 * time.Second
	pids := filepath.Join(t.TempDir(), "pids")
	// setup.py starts a child that sleeps too: the group kill takes both.
	prelude := "import subprocess\n_c = subprocess.Popen(['sleep', '60'])\nwith open(" + strconv.Quote(pids) + ", 'a') as _f:\n    _f.write('%d\\n' % _c.pid)\n" +
		sdisttest.Sleep(pids, time.Minute)
	src := writeSdist(t, sdisttest.Spec{Name: "slow", Version: "1.0", Prelude: prelude})
	start := time.Now()
	_, err := b.Build(context.Background(), src)
	buildError(t, err, TimedOut, "[build].timeout")
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the build took %s to stop", d)
	}
	checkGone(t, pids)

	b.Timeout = time.Minute
	os.Remove(pids)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for i := 0; i < 300; i++ {
			if data, _ := os.ReadFile(pids); strings.Count(string(data), "\n") >= 2 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	_, err = b.Build(ctx, src)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled build: %v", err)
	}
	checkGone(t, pids)
}

// checkGone fails unless every pid listed in file (after "sleeping" or
// alone) is gone.
func checkGone(t *testing.T, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		for syscall.Kill(pid, 0) == nil {
			// A zombie until its parent (the killed interpreter, reaped
			// by init) is gone.
			if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(stat), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("process %d of the killed build still runs", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// A builder removes the throwaway directories of this host's builders that
// are gone, and leaves live ones alone.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	host, _ := os.Hostname()
	host = strings.NewReplacer(".", "_", "/", "_").Replace(host)
	sleeper := startSleep(t)
	live := filepath.Join(dir, fmt.Sprintf(".%s.vbtmp.%s.%d.0123456789abcdef01234567", tempBase, host, sleeper.Pid))
	dead := filepath.Join(dir, fmt.Sprintf(".%s.vbtmp.%s.%d.0123456789abcdef01234567", tempBase, host, deadPID(t)))
	other := filepath.Join(dir, fmt.Sprintf(".%s.vbtmp.%s.%d.0123456789abcdef01234567", "something-else", host, deadPID(t)))
	for _, d := range []string{live, dead, other} {
		if err := os.MkdirAll(filepath.Join(d, "env", "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	RemoveStale(dir, nil)
	for d, want := range map[string]bool{live: true, dead: false, other: true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s: present %v, want %v", filepath.Base(d), err == nil, want)
		}
	}
}

func startSleep(t *testing.T) *os.Process {
	t.Helper()
	p, err := os.StartProcess("/bin/sleep", []string{"sleep", "60"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(); p.Wait() })
	return p
}

func deadPID(t *testing.T) int {
	t.Helper()
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	return p.Pid
}

func TestKey(t *testing.T) {
	bk := []Backend{{Name: "setuptools", Version: "80.9.0", Source: wheel.Source{SHA256: strings.Repeat("a", 64)}},
		{Name: "wheel", Version: "0.45.1", Source: wheel.Source{SHA256: strings.Repeat("b", 64)}}}
	sd := strings.Repeat("c", 64)
	k := Key(sd, "cpython|3.11.7", bk)
	if len(k) != 64 {
		t.Fatalf("key %q", k)
	}
	if Key(strings.ToUpper(sd), "cpython|3.11.7", []Backend{bk[1], bk[0]}) != k {
		t.Error("the key depends on the backends' order or the digest's case")
	}
	changed := []Backend{bk[0], {Name: "wheel", Version: "0.45.1", Source: wheel.Source{SHA256: strings.Repeat("d", 64)}}}
	for name, other := range map[string]string{
		"sdist":       Key(strings.Repeat("e", 64), "cpython|3.11.7", bk),
		"interpreter": Key(sd, "cpython|3.11.8", bk),
		"backend":     Key(sd, "cpython|3.11.7", changed),
		"no backend":  Key(sd, "cpython|3.11.7", bk[:1]),
	} {
		if other == k {
			t.Errorf("another %s gives the same key", name)
		}
	}
}
