package lockgen

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/pep508"
	"github.com/volboot/volboot/bootstrap/pylock"
	"github.com/volboot/volboot/lockgen/lockgentest"
	"github.com/volboot/volboot/manifests"
)

// fixture is a fake index (files over HTTP, a universe for the fake uv)
// and the fake uv itself.
type fixture struct {
	t     *testing.T
	dir   string
	bin   string
	files map[string][]byte
	srv   *httptest.Server
	u     lockgentest.Universe
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, dir: t.TempDir(), files: map[string][]byte{}, u: lockgentest.Universe{Packages: map[string][]lockgentest.Version{}}}
	f.bin = lockgentest.Install(t, t.TempDir())
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := f.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(f.srv.Close)
	// The default build environment of sdists ([build].requirements):
	// locked only when the lock holds an sdist.
	f.add("setuptools", "70.0", nil)
	f.add("wheel", "0.43.0", nil)
	return f
}

// serve puts data at path and returns it as a file of the given kind.
func (f *fixture) serve(kind, path string, data []byte) lockgentest.File {
	f.files[path] = data
	return lockgentest.File{Kind: kind, URL: f.srv.URL + path, Size: int64(len(data)), SHA256: lockgentest.Digest(data)}
}

// wheel is a (fake) wheel of name-version.
func (f *fixture) wheel(name, version string) lockgentest.File {
	return f.serve("wheel", "/files/"+strings.ReplaceAll(name, "-", "_")+"-"+version+"-py3-none-any.whl", []byte("wheel "+name+" "+version))
}

// add puts a release with a wheel (unless files are given) in the universe.
func (f *fixture) add(name, version string, deps []string, files ...lockgentest.File) *lockgentest.Version {
	if len(files) == 0 {
		files = []lockgentest.File{f.wheel(name, version)}
	}
	f.u.Packages[name] = append(f.u.Packages[name], lockgentest.Version{Version: version, Deps: deps, Files: files})
	vs := f.u.Packages[name]
	return &vs[len(vs)-1]
}

func (f *fixture) manifest(text string) *manifests.Manifest {
	f.t.Helper()
	file := filepath.Join(f.dir, "volboot.toml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		f.t.Fatal(err)
	}
	m, err := manifests.Load(file)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

// lock runs Lock with the fake uv; it returns the result and the calls.
func (f *fixture) lock(m *manifests.Manifest, edit func(*Request)) (*Result, []lockgentest.Call, error) {
	f.t.Helper()
	env, logFile := lockgentest.WriteUniverse(f.t, f.t.TempDir(), f.u)
	req := Request{
		Manifest: m,
		Platform: m.DefaultPlatform(),
		LockFile: filepath.Join(f.dir, "pylock.toml"),
		UV:       UV{Path: filepath.Join(f.bin, "uv"), Version: UVVersion},
		Runner:   ExecRunner{},
		Fetcher:  HTTPFetcher{Client: f.srv.Client()},
		TempDir:  f.t.TempDir(),
		Env:      append(UVEnv(os.Environ()), env...),
		Jobs:     2,
		Log:      zap.NewNop(),
	}
	if edit != nil {
		edit(&req)
	}
	res, err := Lock(context.Background(), req)
	return res, lockgentest.ReadCalls(f.t, logFile), err
}

const twoGroups = `name = "t"
[python]
requires = ">=3.11,<3.12"
[lock]
path = "pylock.toml"
[[index]]
name = "first"
url = "https://first.example/simple"
[[index]]
url = "https://pypi.example/simple"
[[group]]
name = "core"
requirements = ["alpha"]
[[group]]
name = "Extra_Stuff"
required = false
requirements = ["beta>=1"]
`

func parsed(t *testing.T, res *Result) *pylock.Lock {
	t.Helper()
	l, err := pylock.Parse("pylock.toml", res.Data)
	if err != nil {
		t.Fatalf("the lock does not parse: %v\n%s", err, res.Data)
	}
	return l
}

func pkgByName(l *pylock.Lock, name string) *pylock.Package {
	for _, p := range l.Packages {
		if p.Normalized == name {
			return p
		}
	}
	return nil
}

func TestLockMarksGroups(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", []string{"common"})
	f.add("beta", "2.0", []string{"common", "gamma"})
	f.add("common", "3.0", nil)
	f.add("gamma", "0.1", nil).Marker = "platform_machine == 'x86_64' or platform_machine == 'aarch64'"
	m := f.manifest(twoGroups)
	res, calls, err := f.lock(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := parsed(t, res)
	want := map[string]string{
		"alpha":  `"core" in dependency_groups`,
		"beta":   `"extra-stuff" in dependency_groups`,
		"common": `"core" in dependency_groups or "extra-stuff" in dependency_groups`,
		"gamma":  `(platform_machine == "x86_64" or platform_machine == "aarch64") and "extra-stuff" in dependency_groups`,
	}
	if len(l.Packages) != len(want) {
		t.Fatalf("%d packages, want %d:\n%s", len(l.Packages), len(want), res.Data)
	}
	for name, marker := range want {
		p := pkgByName(l, name)
		if p == nil {
			t.Fatalf("%s missing:\n%s", name, res.Data)
		}
		if got := p.Marker.String(); got != marker {
			t.Errorf("%s: marker %s, want %s", name, got, marker)
		}
	}
	if len(res.Check.Errors) > 0 || len(res.Check.Warnings) > 0 {
		t.Errorf("CheckLock: %v %v", res.Check.Errors, res.Check.Warnings)
	}
	if len(res.Problems) != 0 {
		t.Errorf("problems: %+v", res.Problems)
	}
	// One joint run, then each group alone constrained to the joint pins.
	if len(calls) != 3 {
		t.Fatalf("%d uv runs, want 3: %+v", len(calls), calls)
	}
	if calls[0].In != "alpha\nbeta>=1\n" || calls[0].Constraints != "" {
		t.Errorf("joint run: in %q constraints %q", calls[0].In, calls[0].Constraints)
	}
	if calls[0].Offline {
		t.Error("the joint run is offline")
	}
	for _, c := range calls[1:] {
		if !c.Offline {
			t.Error("a group run is online: it needs nothing the joint run did not fetch")
		}
		if c.Constraints != "alpha==1.0\nbeta==2.0\ncommon==3.0\ngamma==0.1\n" {
			t.Errorf("group run without the joint pins as constraints: %q", c.Constraints)
		}
		if c.In != "alpha\n" && c.In != "beta>=1\n" {
			t.Errorf("group run of %q", c.In)
		}
	}
	for _, c := range calls {
		args := strings.Join(c.Args, " ")
		for _, w := range []string{"--python-platform x86_64-manylinux_2_36", "--python-version 3.11", "--format pylock.toml",
			"--index https://first.example/simple --default-index https://pypi.example/simple", "--no-config"} {
			if !strings.Contains(args, w) {
				t.Errorf("uv %s: missing %q", args, w)
			}
		}
	}
	// What the lock was made from.
	d := res.Document
	if d.Tool.PythonPlatform != "x86_64-manylinux_2_36" || d.Tool.Resolver != "uv "+UVVersion ||
		strings.Join(d.DependencyGroups, ",") != "core,extra-stuff" || strings.Join(d.DefaultGroups, ",") != "core" {
		t.Errorf("document: %+v", d)
	}
}

// A per-group run that uv's cache cannot serve offline runs again online.
func TestLockGroupRunsOnlineOnCacheMiss(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", nil)
	f.add("beta", "2.0", nil)
	f.u.NoCache = true
	res, calls, err := f.lock(f.manifest(twoGroups), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Document.Packages) != 2 || len(calls) != 5 {
		t.Fatalf("%d packages, %d uv runs (want 2, 5)", len(res.Document.Packages), len(calls))
	}
	online := 0
	for _, c := range calls[1:] {
		if !c.Offline && c.Constraints != "" {
			online++
		}
	}
	if online != 2 {
		t.Errorf("%d group runs online, want 2", online)
	}
}

// A package two groups want at different bounds gets one version that
// suits both: the per-group runs are held to the joint pins.
func TestLockOneVersionAcrossGroups(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", []string{"common"})
	f.add("beta", "2.0", []string{"common<3"})
	f.add("common", "2.0", nil)
	f.add("common", "3.0", nil)
	res, _, err := f.lock(f.manifest(twoGroups), nil)
	if err != nil {
		t.Fatal(err)
	}
	l := parsed(t, res)
	n := 0
	for _, p := range l.Packages {
		if p.Normalized == "common" {
			n++
			if p.Version != "2.0" || p.Marker.String() != `"core" in dependency_groups or "extra-stuff" in dependency_groups` {
				t.Errorf("common %s %s", p.Version, p.Marker)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d entries for common, want 1", n)
	}
}

func TestLockOptionalGroupUnresolvable(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", nil)
	f.add("beta", "2.0", nil).Fail = "  × Failed to build `beta==2.0`\n  ├─▶ The build backend returned an error\n  ╰─▶ ModuleNotFoundError: No module named 'torch'"
	res, calls, err := f.lock(f.manifest(twoGroups), nil)
	if err != nil {
		t.Fatal(err)
	}
	l := parsed(t, res)
	if len(l.Packages) != 1 || l.Packages[0].Name != "alpha" {
		t.Fatalf("want only alpha locked:\n%s", res.Data)
	}
	if len(res.Problems) != 1 || res.Problems[0].Kind != ProblemUnlocked || res.Problems[0].Group != "extra-stuff" {
		t.Fatalf("problems %+v", res.Problems)
	}
	msg := res.Problems[0].Message
	for _, w := range []string{"No module named 'torch'", "by direct URL with its sha256", "#sha256=", "left out of the lock", "other groups are locked"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message lacks %q:\n%s", w, msg)
		}
	}
	if g := res.Groups[1]; g.Locked || !strings.Contains(g.Reason, "cannot be resolved") {
		t.Errorf("group outcome %+v", g)
	}
	if len(res.Document.Tool.Unlocked) != 1 || res.Document.Tool.Unlocked[0].Group != "extra-stuff" {
		t.Errorf("unlocked %+v", res.Document.Tool.Unlocked)
	}
	// joint (fails), core alone (ok), core+extra (fails), extra alone
	// (fails), then core constrained.
	if len(calls) != 5 {
		t.Errorf("%d uv runs, want 5", len(calls))
	}
	// The manifest check says the group's requirement is missing.
	if len(res.Check.Errors) == 0 {
		t.Error("CheckLock should report the missing group")
	}
}

func TestLockRequiredGroupUnresolvable(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", nil).Unreachable = "https://first.example/simple/alpha/"
	f.add("beta", "2.0", nil)
	res, _, err := f.lock(f.manifest(twoGroups), nil)
	var rg *RequiredGroupError
	if !errors.As(err, &rg) || res != nil {
		t.Fatalf("want a RequiredGroupError and nothing, got %v", err)
	}
	for _, w := range []string{"group core (required)", "could not fetch https://first.example/simple/alpha/", "network failure", "Nothing was written"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("message lacks %q:\n%s", w, err)
		}
	}
}

func TestLockGroupsConflict(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", []string{"common==1"})
	f.add("beta", "2.0", []string{"common==2"})
	f.add("common", "1", nil)
	f.add("common", "2", nil)
	res, _, err := f.lock(f.manifest(twoGroups), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Problems) != 1 || !strings.Contains(res.Problems[0].Message, "resolves on its own but not together with groups core") {
		t.Fatalf("problems %+v", res.Problems)
	}
	if p := pkgByName(parsed(t, res), "common"); p == nil || p.Version != "1" {
		t.Errorf("common should be locked at 1 for core")
	}
}

// flash-attn's case: an optional group whose package has only an sdist
// with native code. The sdist stays in the lock (so sync degrades the
// group saying why), and the message says how to pin a wheel instead.
func TestLockNativeSdist(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", nil)
	sdist := lockgentest.Sdist(t, "flashy", "2.8.3", map[string]string{"setup.py": "from torch.utils import cpp_extension\n", "csrc/kernel.cu": "__global__ void k() {}\n"})
	f.add("flashy", "2.8.3", []string{"alpha"}, f.serve("sdist", "/files/flashy-2.8.3.tar.gz", sdist))
	m := f.manifest(strings.Replace(twoGroups, `"beta>=1"`, `"flashy==2.8.3"`, 1))
	res, _, err := f.lock(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Problems) != 1 || res.Problems[0].Kind != ProblemNeedsCompiler {
		t.Fatalf("problems %+v", res.Problems)
	}
	msg := res.Problems[0].Message
	for _, w := range []string{"flashy 2.8.3", "csrc/kernel.cu", "a worker cannot build it", `"flashy @ https://`, "#sha256=", "group extra-stuff stays degraded", "the rest of the lock is written"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message lacks %q:\n%s", w, msg)
		}
	}
	l := parsed(t, res)
	p := pkgByName(l, "flashy")
	if p == nil || len(p.Wheels) != 0 || p.Sdist == nil || len(p.OtherSources) != 0 {
		t.Fatalf("flashy should be locked as its sdist:\n%s", res.Data)
	}
	// Requirements are met (sync does not refuse the pair); only the
	// optional group cannot be installed.
	if errs := m.CheckRequirements(l, func(g string) (pep508.Environment, bool) {
		tg, err := m.DefaultPlatform().Target([]string{g})
		return tg.Env, err == nil
	}); len(errs) > 0 {
		t.Errorf("requirements: %v", errs)
	}
	// The sdist is installable as far as the lock can tell (a worker
	// tries to build it and degrades the group): its build environment
	// is pinned, for the build group alone.
	if len(res.Check.Errors) != 0 {
		t.Errorf("CheckLock: %v", res.Check.Errors)
	}
	for _, name := range []string{"setuptools", "wheel"} {
		p := pkgByName(l, name)
		holds := func(g string) bool {
			tg, err := m.DefaultPlatform().Target([]string{g})
			ok, merr := p.Marker.Evaluate(tg.Env)
			return err == nil && merr == nil && ok
		}
		if p == nil || !holds("volboot-build") || holds("core") || holds("extra-stuff") {
			t.Errorf("%s is not locked for the build group alone:\n%s", name, res.Data)
		}
	}
	for _, g := range res.Groups {
		if g.Name == "volboot-build" {
			t.Errorf("the build group is reported as a manifest group: %+v", res.Groups)
		}
	}
	// lock --check compares the build group with [build].requirements,
	// not as a group the manifest lost.
	if c, err := Check(m, m.DefaultPlatform(), "pylock.toml", res.Data); err != nil || !c.OK() {
		t.Errorf("the fresh lock fails its check: %+v %v", c, err)
	}
	other := f.manifest(strings.Replace(twoGroups, `"beta>=1"`, `"flashy==2.8.3"`, 1) + "\n[build]\nrequirements = [\"setuptools>=70\", \"wheel\"]\n")
	if c, err := Check(other, other.DefaultPlatform(), "pylock.toml", res.Data); err != nil || c.OK() || !strings.Contains(strings.Join(c.Stale, "\n"), "volboot-build") {
		t.Errorf("a changed build environment does not make the lock stale: %+v %v", c, err)
	}
}

// A lock without sdists pins no build environment.
func TestLockNoSdistNoBuildGroup(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", nil)
	f.add("beta", "2.0", nil)
	res, _, err := f.lock(f.manifest(twoGroups), nil)
	if err != nil {
		t.Fatal(err)
	}
	if l := parsed(t, res); pkgByName(l, "setuptools") != nil || strings.Contains(string(res.Data), "volboot-build") {
		t.Errorf("a lock without sdists pins a build environment:\n%s", res.Data)
	}
}

func TestLockPureSdist(t *testing.T) {
	f := newFixture(t)
	sdist := lockgentest.Sdist(t, "alpha", "1.0", map[string]string{"setup.py": "from setuptools import setup; setup()\n", "alpha/__init__.py": "", "alpha/data.h": ""})
	f.add("alpha", "1.0", nil, f.serve("sdist", "/files/alpha-1.0.tar.gz", sdist))
	f.add("beta", "2.0", nil)
	res, _, err := f.lock(f.manifest(twoGroups), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Problems) != 1 || res.Problems[0].Kind != ProblemSdistOnly || !strings.Contains(res.Problems[0].Message, "pure-Python sdist (3 files") {
		t.Fatalf("problems %+v", res.Problems)
	}
}

func TestLockSdistBytesDiffer(t *testing.T) {
	f := newFixture(t)
	sdist := lockgentest.Sdist(t, "alpha", "1.0", map[string]string{"setup.py": ""})
	file := f.serve("sdist", "/files/alpha-1.0.tar.gz", sdist)
	file.SHA256 = strings.Repeat("0", 64)
	f.add("alpha", "1.0", nil, file)
	f.add("beta", "2.0", nil)
	_, _, err := f.lock(f.manifest(twoGroups), nil)
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("want a MismatchError, got %v", err)
	}
}

func TestLockRefusesArtifactWithoutSize(t *testing.T) {
	f := newFixture(t)
	w := f.wheel("alpha", "1.0")
	w.Size = -1
	f.add("alpha", "1.0", nil, w)
	f.add("beta", "2.0", nil)
	_, _, err := f.lock(f.manifest(twoGroups), nil)
	if err == nil || !strings.Contains(err.Error(), "uv wrote no size") || !strings.Contains(err.Error(), "package alpha 1.0: wheel 1") {
		t.Fatalf("want an error naming the wheel without a size, got %v", err)
	}
}

// A wheel pinned by direct URL: uv writes it as an archive without a
// size; volboot measures it, checks its sha256, and makes it a wheel.
func TestLockDirectURLWheel(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", nil)
	whl := []byte("a wheel built for this stack")
	file := f.serve("archive", "/gh/flash_attn-2.8.3%2Bcu12-cp311-cp311-linux_x86_64.whl", whl)
	f.files["/gh/flash_attn-2.8.3+cu12-cp311-cp311-linux_x86_64.whl"] = whl
	file.Size = -1
	f.add("flash-attn", "2.8.3+cu12", nil, file)
	m := f.manifest(strings.Replace(twoGroups, `"beta>=1"`, `"flash-attn==2.8.3"`, 1))
	res, _, err := f.lock(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := pkgByName(parsed(t, res), "flash-attn")
	if p == nil || len(p.Wheels) != 1 || len(p.OtherSources) != 0 {
		t.Fatalf("flash-attn should be a wheel:\n%s", res.Data)
	}
	w := p.Wheels[0]
	if w.Size != int64(len(whl)) || w.Filename != "flash_attn-2.8.3+cu12-cp311-cp311-linux_x86_64.whl" {
		t.Errorf("wheel %+v", w)
	}
	if len(res.Check.Errors) > 0 {
		t.Errorf("CheckLock: %v", res.Check.Errors)
	}

	// Other bytes than uv hashed: refused.
	f.files["/gh/flash_attn-2.8.3+cu12-cp311-cp311-linux_x86_64.whl"] = []byte("other bytes")
	_, _, err = f.lock(m, nil)
	var me *MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("want a MismatchError, got %v", err)
	}
}

// The previous lock's pins are preferences; --upgrade-package frees one;
// --upgrade frees all.
func TestLockKeepsPinsAndUpgradesOne(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", []string{"common"})
	f.add("beta", "2.0", nil)
	f.add("common", "1.0", nil)
	m := f.manifest(twoGroups)
	first, _, err := f.lock(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.add("alpha", "1.1", []string{"common"})
	f.add("common", "1.1", nil)

	again, calls, err := f.lock(m, func(r *Request) { r.Previous = first.Data })
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Changes) != 0 || string(again.Data) != string(first.Data) {
		t.Errorf("a second lock moved pins: %+v", again.Changes)
	}
	if calls[0].Preferences != string(first.Data) {
		t.Error("the joint run did not get the previous lock as preferences")
	}
	for _, c := range calls[1:] {
		if c.Preferences != "" {
			t.Error("a per-group run got preferences; it is held by constraints")
		}
	}

	up, calls, err := f.lock(m, func(r *Request) { r.Previous = first.Data; r.UpgradePackages = []string{"alpha"} })
	if err != nil {
		t.Fatal(err)
	}
	if len(up.Changes) != 1 || up.Changes[0] != (Change{Package: "alpha", Old: "1.0", New: "1.1"}) {
		t.Errorf("changes %+v, want alpha 1.0 -> 1.1 only", up.Changes)
	}
	if !strings.Contains(strings.Join(calls[0].Args, " "), "--upgrade-package alpha") {
		t.Errorf("joint run args %q", calls[0].Args)
	}

	all, calls, err := f.lock(m, func(r *Request) { r.Previous = first.Data; r.Upgrade = true })
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Changes) != 2 || calls[0].Preferences != "" {
		t.Errorf("--upgrade: changes %+v, preferences given: %v", all.Changes, calls[0].Preferences != "")
	}
}

func TestCheck(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", nil)
	f.add("beta", "2.0", nil)
	m := f.manifest(twoGroups)
	res, _, err := f.lock(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(manifest string) CheckResult {
		t.Helper()
		mm := f.manifest(manifest)
		c, err := Check(mm, mm.DefaultPlatform(), "pylock.toml", res.Data)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := check(twoGroups); !c.OK() || !c.MadeByVolboot {
		t.Fatalf("a fresh lock fails its check: %+v", c)
	}
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"requirement removed", `requirements = ["beta>=1"]`, `requirements = ["alpha"]`, "no longer beta>=1"},
		{"requirement added", `requirements = ["alpha"]`, `requirements = ["alpha", "gamma"]`, "now gamma"},
		{"group added", "[[group]]\nname = \"core\"", "[[group]]\nname = \"new\"\nrequirements = [\"alpha\"]\n[[group]]\nname = \"core\"", "group new is not in the lock"},
		{"group removed", "[[group]]\nname = \"Extra_Stuff\"\nrequired = false\nrequirements = [\"beta>=1\"]\n", "", "group extra-stuff is in the lock but no longer in the manifest"},
		{"index changed", "https://first.example/simple", "https://other.example/simple", "the manifest's indexes are"},
		{"python changed", `">=3.11,<3.12"`, `">=3.12"`, "the lock was made for Python 3.11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := check(strings.Replace(twoGroups, tc.from, tc.to, 1))
			if c.OK() || !strings.Contains(strings.Join(c.Stale, "\n"), tc.want) {
				t.Errorf("stale %q, errors %q; want %q", c.Stale, c.Report.Errors, tc.want)
			}
		})
	}
	// A lock without [tool.volboot] is only held to CheckLock.
	plain := strings.Split(string(res.Data), "\n[tool.volboot]")[0]
	mm := f.manifest(twoGroups)
	c, err := Check(mm, mm.DefaultPlatform(), "pylock.toml", []byte(plain))
	if err != nil || !c.OK() || c.MadeByVolboot {
		t.Errorf("plain lock: %+v %v", c, err)
	}
}

func TestCheckUnlockedGroupIsStale(t *testing.T) {
	f := newFixture(t)
	f.add("alpha", "1.0", nil)
	f.add("beta", "2.0", nil).Fail = "boom"
	m := f.manifest(twoGroups)
	res, _, err := f.lock(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Check(m, m.DefaultPlatform(), "pylock.toml", res.Data)
	if err != nil {
		t.Fatal(err)
	}
	if c.OK() || !strings.Contains(strings.Join(c.Stale, "\n"), "group extra-stuff was left out of the lock: cannot be resolved from the indexes: boom") {
		t.Errorf("%+v", c)
	}
}
