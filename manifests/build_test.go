package manifests

import (
	"strings"
	"testing"
	"time"

	"github.com/volboot/volboot/bootstrap/pylock"
)

const buildBase = "[python]\nrequires = \">=3.11\"\n[lock]\npath = \"pylock.toml\"\n[[group]]\nname = \"tts\"\nrequirements = [\"encodec\"]\n"

// Without [build], sdists are built with setuptools and wheel, for 5
// minutes at most; [build] says otherwise, or turns builds off.
func TestBuildTable(t *testing.T) {
	m, err := Parse("m.toml", []byte(buildBase))
	if err != nil {
		t.Fatal(err)
	}
	if m.Build.Timeout != DefaultBuildTimeout || len(m.Build.Requirements) != 2 || m.Build.Requirements[0].String() != "setuptools>=40.8.0" || m.Build.Requirements[1].Name != "wheel" {
		t.Errorf("defaults: %+v", m.Build)
	}
	m, err = Parse("m.toml", []byte(buildBase+"[build]\nrequirements = [\"hatchling==1.27\", \"packaging\", \"pathspec; python_version >= '3.8'\"]\ntimeout = \"90s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Build.Timeout != 90*time.Second || len(m.Build.Requirements) != 3 {
		t.Errorf("custom: %+v", m.Build)
	}
	m, err = Parse("m.toml", []byte(buildBase+"[build]\nrequirements = []\n"))
	if err != nil || len(m.Build.Requirements) != 0 || m.Build.Timeout != DefaultBuildTimeout {
		t.Errorf("off: %+v %v", m.Build, err)
	}
	for _, c := range []struct{ doc, want string }{
		{"[build]\nrequirements = [\"setuptools @ https://x.example/s.whl\"]\n", "m.toml:9: build.requirements[0]: setuptools: a build requirement is a wheel of the lock, not a URL"},
		{"[build]\nrequirements = [\"setuptools[core]\"]\n", "extras are not installed"},
		{"[build]\nrequirements = [\"wheel\", \"Wheel\"]\n", "Wheel is listed twice"},
		{"[build]\nrequirements = [\"not valid!\"]\n", "build.requirements[0]"},
		{"[build]\ntimeout = \"0s\"\n", "build.timeout: \"0s\" must be positive"},
		{"[build]\ntimeout = 5\n", "build.timeout: must be a duration in quotes"},
		{"[build]\nrequirements = \"setuptools\"\n", "build.requirements: must be a list of strings"},
		{"[build]\nrequires = []\n", "unknown key \"build.requires\""},
		{"[[group]]\nname = \"volboot-build\"\nrequirements = [\"x\"]\n", "is the dependency group of the build environment"},
	} {
		_, err := Parse("m.toml", []byte(buildBase+c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: want %q, got %v", c.doc, c.want, err)
		}
	}
}

const sdistLock = `lock-version = "1.0"
requires-python = ">=3.9"
[[packages]]
name = "encodec"
version = "0.1.1"
marker = "'tts' in dependency_groups"
sdist = { url = "https://files.example/encodec-0.1.1.tar.gz", size = 10, hashes = { sha256 = "1111111111111111111111111111111111111111111111111111111111111111" } }
`

const buildWheels = `[[packages]]
name = "setuptools"
version = "80.9.0"
marker = "'volboot-build' in dependency_groups"
[[packages.wheels]]
url = "https://files.example/setuptools-80.9.0-py3-none-any.whl"
hashes = { sha256 = "2222222222222222222222222222222222222222222222222222222222222222" }
[[packages]]
name = "wheel"
version = "0.45.1"
[[packages.wheels]]
url = "https://files.example/wheel-0.45.1-py3-none-any.whl"
hashes = { sha256 = "3333333333333333333333333333333333333333333333333333333333333333" }
`

// manifest check says which packages are built from sdists, and fails
// when the lock lacks the build environment or has it at other versions.
func TestCheckLockSdists(t *testing.T) {
	m, err := Parse("m.toml", []byte(buildBase))
	if err != nil {
		t.Fatal(err)
	}
	check := func(lockDoc string) Report {
		t.Helper()
		l, err := pylock.Parse("pylock.toml", []byte(lockDoc))
		if err != nil {
			t.Fatal(err)
		}
		return m.CheckLock(l, m.DefaultPlatform())
	}
	r := check(sdistLock + buildWheels)
	if len(r.Errors) != 0 || !strings.Contains(strings.Join(r.Warnings, "\n"), "package encodec 0.1.1 has no wheel for it and is built from its sdist encodec-0.1.1.tar.gz (pylock.toml:7)") {
		t.Errorf("with a build environment: %+v", r)
	}
	if strings.Contains(strings.Join(r.Warnings, "\n"), "setuptools 80.9.0 is reached by no group") {
		t.Errorf("the build environment counts as reached: %+v", r.Warnings)
	}
	r = check(sdistLock)
	if got := strings.Join(r.Errors, "\n"); !strings.Contains(got, "build environment on CPython 3.11") || !strings.Contains(got, "no package setuptools") || !strings.Contains(got, "'volboot-build'") {
		t.Errorf("without one: %+v", r)
	}
	r = check(sdistLock + strings.Replace(buildWheels, "80.9.0", "39.0.0", 2))
	if got := strings.Join(r.Errors, "\n"); !strings.Contains(got, "[build].requirements wants setuptools>=40.8.0, the lock has setuptools 39.0.0") {
		t.Errorf("too old: %+v", r)
	}
	// With no sdist, nothing is said about builds.
	m2, _ := Parse("m.toml", []byte(strings.Replace(buildBase, "encodec", "wheel", 1)))
	l, _ := pylock.Parse("pylock.toml", []byte("lock-version = \"1.0\"\n"+buildWheels))
	if r := m2.CheckLock(l, m2.DefaultPlatform()); len(r.Errors) != 0 || strings.Contains(strings.Join(r.Warnings, "\n"), "sdist") {
		t.Errorf("no sdist: %+v", r)
	}
}
