package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/bench/sync/synthstack"
	"github.com/volboot/volboot/bootstrap/sdist/sdisttest"
	"github.com/volboot/volboot/integration/testenv"
	"github.com/volboot/volboot/integration/testindex"
)

// Sdists (DESIGN.md §5.7): the tests make their own, plain setup.py
// projects, serve them with setuptools and wheel wheels of this machine
// (sdisttest.BackendWheels) from the local index, and count the builds
// that really ran: each sdist's setup.py appends a line to a file.

// addSdist writes the sdist of spec, serves it, and returns its lock entry
// in group.
func (f *fixture) addSdist(spec sdisttest.Spec, group string) synthstack.Entry {
	f.t.Helper()
	sd, err := sdisttest.Write(f.wheels, spec)
	if err != nil {
		f.t.Fatal(err)
	}
	data, err := os.ReadFile(sd.Path)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.index.AddFile(testindex.FileURLPath(sd.Filename), testindex.Bytes(data)); err != nil {
		f.t.Fatal(err)
	}
	return synthstack.Entry{Name: spec.Name, Version: spec.Version, Filename: sd.Filename, URL: f.srv.URL + testindex.FileURLPath(sd.Filename),
		SHA256: sd.SHA256, Size: sd.Size, Group: group, Sdist: true}
}

// addBuildBackend serves setuptools and wheel wheels that build with this
// machine's python3 and returns their lock entries, marked for the build
// environment's dependency group only.
func (f *fixture) addBuildBackend() []synthstack.Entry {
	f.t.Helper()
	st, wh, err := sdisttest.BackendWheels("python3")
	if err != nil {
		testenv.Missing(f.t, "%v", err)
	}
	var out []synthstack.Entry
	for _, path := range []string{st, wh} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.t.Fatal(err)
		}
		name := filepath.Base(path)
		if err := f.index.AddWheel(name, testindex.Bytes(data)); err != nil {
			f.t.Fatal(err)
		}
		sha, err := f.index.SHA256(testindex.FileURLPath(name))
		if err != nil {
			f.t.Fatal(err)
		}
		parts := strings.Split(name, "-")
		out = append(out, synthstack.Entry{Name: parts[0], Version: parts[1], Filename: name, URL: f.srv.URL + testindex.FileURLPath(name),
			SHA256: sha, Size: int64(len(data)), Group: "volboot-build"})
	}
	return out
}

// buildTmp points volboot's TMPDIR, where builds make their throwaway
// directories, at a directory of the test's and returns it.
func (f *fixture) buildTmp() string {
	dir := filepath.Join(f.t.TempDir(), "tmp")
	if err := os.Mkdir(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	f.env = append(f.env, "TMPDIR="+dir)
	return dir
}

// noBuildLeftovers fails if a build's throwaway directory is still in tmp.
func noBuildLeftovers(t *testing.T, tmp string) {
	t.Helper()
	ents, _ := os.ReadDir(tmp)
	for _, e := range ents {
		if strings.Contains(e.Name(), "volboot-build") {
			t.Errorf("a build's throwaway directory was left: %s", e.Name())
		}
	}
}

// lines counts the lines of file (0 when it does not exist).
func lines(t *testing.T, file string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

// importIn runs python code in generation id and returns its output.
func (f *fixture) importIn(id, code string) string {
	f.t.Helper()
	out, err := exec.Command(filepath.Join(f.vol, ".volboot", "envs", id, "bin", "python"), "-c", code).CombinedOutput()
	if err != nil {
		f.t.Fatalf("generation %s: python -c %q: %v\n%s", id, code, err, out)
	}
	return strings.TrimSpace(string(out))
}

// A locked sdist is built once, installed and importable in the
// generation; the build environment stays out of it; later syncs and
// other generations reuse the built wheel without building again.
func TestSdistBuiltOnceAndReused(t *testing.T) {
	f := newFixture(t, "")
	tmp := f.buildTmp()
	ws := f.add(synthstack.Small("sdw", 3, 6)...)
	count := filepath.Join(t.TempDir(), "builds")
	good := f.addSdist(sdisttest.Spec{Name: "good-sdist", Version: "1.0", Prelude: sdisttest.CountBuilds(count)}, "core")
	backend := f.addBuildBackend()
	entries := append(append(f.entries("core", ws...), good), backend...)
	group := synthstack.Group{Name: "core", Required: true, Requirements: append(requirements(ws...), "good-sdist==1.0")}
	f.write([]synthstack.Group{group}, entries)

	if r := volboot(t, f.work, nil, "manifest", "check", f.manifest()); r.code != 0 || !strings.Contains(r.stdout+r.stderr, "built from its sdist good_sdist-1.0.tar.gz") {
		t.Errorf("manifest check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r := f.run("sync")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	id := generationOf(t, r.stdout)
	if n := lines(t, count); n != 1 {
		t.Fatalf("the sdist was built %d times, want 1", n)
	}
	if !strings.Contains(r.stderr, "built good-sdist 1.0 from its sdist") {
		t.Errorf("sync did not say it built the sdist:\n%s", r.stderr)
	}
	if got := f.importIn(id, "import good_sdist; print(good_sdist.VERSION)"); got != "1.0" {
		t.Errorf("good_sdist.VERSION = %q", got)
	}
	if got := f.importIn(id, "import importlib.util as u; print(u.find_spec('setuptools') is None, u.find_spec('wheel') is None)"); got != "True True" {
		t.Errorf("the build environment leaked into the generation (setuptools, wheel absent: %s)", got)
	}
	noBuildLeftovers(t, tmp)
	if st, r := f.status("--verify"); !st.InSync || len(st.Drift) != 0 {
		t.Fatalf("status --verify after the build: %s%s", r.stdout, r.stderr)
	}

	// In sync: the fast path, nothing built.
	if id2 := f.sync(); id2 != id {
		t.Fatalf("second sync: generation %s, want %s", id2, id)
	}
	// Another generation (the lock changed elsewhere) reuses the wheel.
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: append(requirements(ws[1:]...), "good-sdist==1.0")}},
		append(append(f.entries("core", ws[1:]...), good), backend...))
	r = f.run("sync")
	if r.code != 0 {
		t.Fatalf("sync after the lock changed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	id3 := generationOf(t, r.stdout)
	if id3 == id {
		t.Fatal("a changed lock kept the generation")
	}
	if n := lines(t, count); n != 1 || strings.Contains(r.stderr, "from its sdist") {
		t.Errorf("the next generation built the sdist again (%d builds):\n%s", n, r.stderr)
	}
	if got := f.importIn(id3, "import good_sdist; print(good_sdist.NAME)"); got != "good-sdist" {
		t.Errorf("good_sdist.NAME = %q", got)
	}
	// gc keeps the built wheel and the sdist while a kept generation
	// holds it.
	if r := f.run("gc"); r.code != 0 {
		t.Fatalf("gc: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if st, r := f.status("--verify"); !st.InSync {
		t.Fatalf("status --verify after gc: %s%s", r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(f.vol, "cache", "sdists", good.SHA256+".tar.gz")); err != nil {
		t.Errorf("gc removed the sdist of a kept generation's package: %v", err)
	}

	// A damaged file of the built wheel: status --verify finds it, and
	// repair builds the wheel again from the cached sdist.
	mods, _ := filepath.Glob(filepath.Join(f.vol, ".volboot", "envs", id3, "lib", "python3*", "site-packages", "good_sdist", "__init__.py"))
	if len(mods) != 1 {
		t.Fatalf("good_sdist/__init__.py in generation %s: %v", id3, mods)
	}
	if err := os.WriteFile(mods[0], []byte("VERSION = 'tampered'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.status("--verify"); st.InSync {
		t.Fatal("status --verify missed a damaged file of a built wheel")
	}
	if r := f.run("repair"); r.code != 0 {
		t.Fatalf("repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := lines(t, count); n != 2 {
		t.Errorf("repair built the sdist %d times in all, want 2", n)
	}
	if st, r := f.status("--verify"); !st.InSync {
		t.Fatalf("status --verify after repair: %s%s", r.stdout, r.stderr)
	}
	if got := f.importIn(id3, "import good_sdist; print(good_sdist.VERSION)"); got != "1.0" {
		t.Errorf("after repair good_sdist.VERSION = %q", got)
	}
	noBuildLeftovers(t, tmp)
}

// A build that fails, or that needs a compiler, degrades its optional
// group with a reason saying how to pin a wheel; in a required group it
// fails the sync with that reason.
func TestSdistBuildFailuresDegrade(t *testing.T) {
	f := newFixture(t, "")
	f.buildTmp()
	ws := f.add(synthstack.Small("sdf", 1, 4)...)
	broken := f.addSdist(sdisttest.Spec{Name: "broken-sdist", Version: "2.0", Prelude: sdisttest.Fail("broken-sdist cannot be built today")}, "broken")
	native := f.addSdist(sdisttest.Spec{Name: "native-sdist", Version: "3.0", Extension: true}, "native")
	backend := f.addBuildBackend()
	entries := append(append(f.entries("core", ws...), broken, native), backend...)
	groups := []synthstack.Group{
		{Name: "core", Required: true, Requirements: requirements(ws...)},
		{Name: "broken", Requirements: []string{"broken-sdist"}},
		{Name: "native", Requirements: []string{"native-sdist"}},
	}
	f.write(groups, entries)
	r := f.run("sync")
	if r.code != 0 {
		t.Fatalf("sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	id := generationOf(t, r.stdout)
	st, _ := f.status()
	for _, c := range []struct{ group, want string }{
		{"broken", "broken-sdist cannot be built today"},
		{"native", "needs a compiler"},
	} {
		state, reason := st.group(c.group)
		if state != "degraded" {
			t.Errorf("group %s: %s (%s), want degraded", c.group, state, reason)
		}
		for _, w := range []string{c.want, "pin a wheel instead", "[[packages.wheels]]", "hashes.sha256"} {
			if !strings.Contains(reason, w) {
				t.Errorf("group %s: the reason lacks %q: %s", c.group, w, reason)
			}
		}
	}
	if got := f.importIn(id, "import importlib.util as u; print(u.find_spec('broken_sdist') is None, u.find_spec('native_sdist') is None)"); got != "True True" {
		t.Errorf("a failed build's package is in the generation: %s", got)
	}

	// Required, the failure is the sync's.
	groups[2].Required = true
	f.write(groups, entries)
	r = f.run("sync")
	msg := strings.Join(failures(r.stderr), "\n")
	if r.code != 1 || !strings.Contains(msg, "required group native failed: native-sdist 3.0") || !strings.Contains(msg, "pin a wheel instead") {
		t.Fatalf("sync with a required group whose sdist needs a compiler: exit %d, %q\n%s", r.code, msg, r.stderr)
	}
}

// A sync killed while it builds leaves nothing that looks complete: the
// build dies with it, no store entry of the built wheel exists, and the
// next sync builds again and installs it.
func TestSdistBuildKilled(t *testing.T) {
	f := newFixture(t, "")
	tmp := f.buildTmp()
	ws := f.add(synthstack.Small("sdk", 2, 4)...)
	dir := t.TempDir()
	flag, pids, count := filepath.Join(dir, "slept"), filepath.Join(dir, "pids"), filepath.Join(dir, "builds")
	// The first build sleeps (and is killed); the next ones build.
	prelude := fmt.Sprintf("if not os.path.exists(%q):\n    open(%q, 'w').close()\n", flag, flag)
	for _, l := range strings.SplitAfter(sdisttest.Sleep(pids, time.Minute), "\n") {
		if l != "" {
			prelude += "    " + l
		}
	}
	prelude += sdisttest.CountBuilds(count)
	slow := f.addSdist(sdisttest.Spec{Name: "slow-sdist", Version: "1.0", Prelude: prelude}, "core")
	f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: append(requirements(ws...), "slow-sdist")}},
		append(append(f.entries("core", ws...), slow), f.addBuildBackend()...))

	c := f.command("sync")
	var out strings.Builder
	c.Stdout, c.Stderr = &out, &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := waitForLine(t, pids, 90*time.Second, &out)
	syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	c.Wait()
	// The build goes with the sync that started it (its parent's death
	// kills it), though it runs in a process group of its own.
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil && !zombie(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the build (pid %d) outlived the sync that was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := lines(t, count); n != 0 {
		t.Fatalf("the killed build ran setup() (%d)", n)
	}
	// No store entry of slow-sdist, complete or not, may pass for one.
	assertNoEntryOf(t, f.vol, "slow-sdist")
	if st, r := f.status(); st.InSync {
		t.Fatalf("status after the killed sync says in sync:\n%s", r.stdout)
	}

	id := f.sync()
	if n := lines(t, count); n != 1 {
		t.Errorf("the next sync built the sdist %d times, want 1", n)
	}
	if got := f.importIn(id, "import slow_sdist; print(slow_sdist.VERSION)"); got != "1.0" {
		t.Errorf("slow_sdist.VERSION = %q", got)
	}
	// The killed build's throwaway directory went with the next build.
	noBuildLeftovers(t, tmp)
	if st, r := f.status("--verify"); !st.InSync {
		t.Fatalf("status --verify: %s%s", r.stdout, r.stderr)
	}
}

// waitForLine waits for file's first line "sleeping <pid>" and returns the
// pid.
func waitForLine(t *testing.T, file string, timeout time.Duration, out fmt.Stringer) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if fh, err := os.Open(file); err == nil {
			sc := bufio.NewScanner(fh)
			if sc.Scan() {
				fh.Close()
				if pid, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "sleeping ")); err == nil {
					return pid
				}
			}
			fh.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the build never started; sync's output:\n%s", out.String())
	return 0
}

func zombie(pid int) bool {
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return strings.Contains(string(stat), ") Z ")
}

// assertNoEntryOf fails if a store entry under a final name holds the
// named distribution without being complete, or if any complete entry
// holds it.
func assertNoEntryOf(t *testing.T, vol, name string) {
	t.Helper()
	store := filepath.Join(vol, ".volboot", "store")
	ents, _ := os.ReadDir(store)
	want := strings.ReplaceAll(name, "-", "_")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue // a staging directory: incomplete by its name
		}
		data, err := os.ReadFile(filepath.Join(store, e.Name(), ".complete"))
		if err != nil {
			t.Errorf("store entry %s has no manifest: it looks complete by its name", e.Name())
			continue
		}
		head, _, _ := strings.Cut(string(data), "\n")
		var m struct{ Name string }
		json.Unmarshal([]byte(head), &m)
		if strings.ReplaceAll(m.Name, "-", "_") == want {
			t.Errorf("store entry %s of %s is complete after its build was killed", e.Name(), name)
		}
	}
}

// Workers that sync at once build an sdist once under the volume lock;
// without the lock each may build it, and every one still ends with the
// same complete generation.
func TestSdistConcurrentBuilds(t *testing.T) {
	for _, c := range []struct {
		mode string
		n    int
	}{{"flock", 4}, {"off", 3}} {
		t.Run(c.mode, func(t *testing.T) {
			f := newFixture(t, "")
			f.buildTmp()
			ws := f.add(synthstack.Small("sdc", 2, 4)...)
			count := filepath.Join(t.TempDir(), "builds")
			sd := f.addSdist(sdisttest.Spec{Name: "shared-sdist", Version: "1.0", Prelude: sdisttest.CountBuilds(count)}, "core")
			f.write([]synthstack.Group{{Name: "core", Required: true, Requirements: append(requirements(ws...), "shared-sdist")}},
				append(append(f.entries("core", ws...), sd), f.addBuildBackend()...))
			f.env = append(f.env, "VOLBOOT_LOCK_MODE="+c.mode)
			results := make([]result, c.n)
			var wg sync.WaitGroup
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cmd := f.command("sync")
					var out, errb strings.Builder
					cmd.Stdout, cmd.Stderr = &out, &errb
					cmd.Run()
					results[i] = result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
				}()
			}
			wg.Wait()
			var id string
			for i, r := range results {
				if r.code != 0 {
					t.Fatalf("sync %d: exit %d\n%s%s", i, r.code, r.stdout, r.stderr)
				}
				if g := generationOf(t, r.stdout); id == "" {
					id = g
				} else if g != id {
					t.Errorf("sync %d: generation %s, another got %s", i, g, id)
				}
			}
			builds := lines(t, count)
			if c.mode == "flock" && builds != 1 {
				t.Errorf("%d workers under the lock built the sdist %d times, want once", c.n, builds)
			}
			if builds < 1 || builds > c.n {
				t.Errorf("%d builds by %d workers", builds, c.n)
			}
			if got := f.importIn(id, "import shared_sdist; print(shared_sdist.VERSION)"); got != "1.0" {
				t.Errorf("shared_sdist.VERSION = %q", got)
			}
			if st, r := f.status("--verify"); !st.InSync || len(st.Drift) != 0 {
				t.Fatalf("status --verify: %s%s", r.stdout, r.stderr)
			}
		})
	}
}
