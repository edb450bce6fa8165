package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// writeWheel writes a minimal wheel for name==version into dir and returns
// its file name and sha256.
func writeWheel(t *testing.T, dir, name, version string) (string, string) {
	t.Helper()
	spec := wheeltest.Spec{Name: name, Version: version, Files: []wheeltest.File{{Name: name + "/__init__.py", Data: []byte("X = 1\n")}}}
	path, sha, err := wheeltest.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Base(path), sha
}

const checkManifest = `name = "t"
[python]
requires = ">=3.9"
[lock]
path = "pylock.toml"
[[group]]
name = "core"
requirements = ["alpha==1.0", "beta>=2"]
[[group]]
name = "opt"
required = false
requirements = ["gamma"]
`

func writeCheckFixture(t *testing.T, manifest string, betaVersion string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "volboot.toml"), []byte(manifest), 0o644)
	wheels := filepath.Join(dir, "wheels")
	os.Mkdir(wheels, 0o755)
	var lock strings.Builder
	lock.WriteString("lock-version = \"1.0\"\nrequires-python = \">=3.8\"\n")
	for _, p := range []struct{ name, version, marker string }{
		{"alpha", "1.0", "'core' in dependency_groups"},
		{"beta", betaVersion, "'core' in dependency_groups"},
		{"gamma", "0.1", "'opt' in dependency_groups"},
		{"stray", "9", "'nobody' in dependency_groups"},
	} {
		fn, sum := writeWheel(t, wheels, p.name, p.version)
		fmt.Fprintf(&lock, "[[packages]]\nname = %q\nversion = %q\nmarker = %q\n[[packages.wheels]]\npath = \"wheels/%s\"\nhashes = { sha256 = %q }\n",
			p.name, p.version, p.marker, fn, sum)
	}
	os.WriteFile(filepath.Join(dir, "pylock.toml"), []byte(lock.String()), 0o644)
	return dir
}

// TestEmbeddedManifestChecks: the default manifest carries its lock
// (made with volboot lock) and the pair passes manifest check.
func TestEmbeddedManifestChecks(t *testing.T) {
	r := volboot(t, t.TempDir(), nil, "manifest", "check", "embedded:f5-tts.toml")
	if r.code != 0 || !strings.Contains(r.stdout, "ok: embedded:f5-tts.toml") || !strings.Contains(r.stdout, "lock pylock.f5-tts.toml") {
		t.Fatalf("manifest check of the embedded manifest: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestLockMissingSaysSoInOneLine: a manifest whose lock does not exist is
// one line naming the lock and how to make it, from every command.
func TestLockMissingSaysSoInOneLine(t *testing.T) {
	dir := writeCheckFixture(t, checkManifest, "2.0")
	os.Remove(filepath.Join(dir, "pylock.toml"))
	manifest := filepath.Join(dir, "volboot.toml")
	r := volboot(t, dir, nil, "manifest", "check", manifest)
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "pylock.toml does not exist") || !strings.Contains(lines[0], "volboot lock") {
		t.Fatalf("stderr should be one line naming the missing lock and how to make it:\n%s", r.stderr)
	}
	// Every command that acts on a volume says the same.
	for _, cmd := range []string{"sync", "status", "repair", "gc", "run"} {
		r := volboot(t, dir, []string{"VOLBOOT_VOLUME=" + t.TempDir(), "VOLBOOT_MANIFEST=" + manifest}, cmd)
		if r.code != 2 || !strings.Contains(r.stderr, "pylock.toml does not exist") {
			t.Errorf("volboot %s: exit %d\n%s", cmd, r.code, r.stderr)
		}
	}
}

func TestManifestCheckGood(t *testing.T) {
	dir := writeCheckFixture(t, checkManifest, "2.1")
	r := volboot(t, dir, nil, "manifest", "check", "volboot.toml")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "ok: volboot.toml: 2 groups, 3 requirements") {
		t.Errorf("stdout: %s", r.stdout)
	}
	if !regexp.MustCompile(`warning: pylock.toml:\d+: package stray 9 is reached by no group`).MatchString(r.stdout) {
		t.Errorf("the unreached package is not reported:\n%s", r.stdout)
	}
}

func TestManifestCheckUnsatisfiedRequirement(t *testing.T) {
	dir := writeCheckFixture(t, checkManifest, "1.5")
	r := volboot(t, dir, nil, "manifest", "check", "volboot.toml")
	if r.code != 2 || !strings.Contains(r.stdout, `volboot.toml:8: beta>=2 is not satisfied by the lock, which has beta 1.5`) {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	m := strings.Replace(checkManifest, `"gamma"`, `"gamma", "delta"`, 1)
	dir = writeCheckFixture(t, m, "2.1")
	r = volboot(t, dir, nil, "manifest", "check", "volboot.toml")
	if r.code != 2 || !strings.Contains(r.stdout, `volboot.toml:12: delta is not in the lock`) {
		t.Fatalf("missing package: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	m = strings.Replace(checkManifest, `requires = ">=3.9"`, `requires = "<3.7"`, 1)
	dir = writeCheckFixture(t, m, "2.1")
	r = volboot(t, dir, nil, "manifest", "check", "volboot.toml")
	if r.code != 2 || !strings.Contains(r.stdout, "admit no common Python version") {
		t.Fatalf("python contradiction: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestManifestCheckBadInputNamesFileLine(t *testing.T) {
	for name, c := range map[string]struct{ from, to, want string }{
		"unknown key":   {`required = false`, "required = false\nreqired = true", `volboot.toml:12:1: unknown key "group.reqired"`},
		"bad specifier": {`"beta>=2"`, `"beta>=>2"`, `volboot.toml:8: group[0].requirements[1]:`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := writeCheckFixture(t, strings.Replace(checkManifest, c.from, c.to, 1), "2.1")
			r := volboot(t, dir, nil, "manifest", "check", "volboot.toml")
			if r.code != 2 || !strings.Contains(strings.Join(failures(r.stderr), "\n"), c.want) {
				t.Fatalf("exit %d, want 2 and %q\n%s%s", r.code, c.want, r.stdout, r.stderr)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"nope"}, {"status", "--nope"}, {"manifest", "check"}, {"--log-format", "xml", "version"},
		{"sync", "--jobs", "0", "--manifest", "embedded:demo.toml", "--volume", t.TempDir()}} {
		if r := volboot(t, t.TempDir(), nil, args...); r.code != 2 || args[0] == "sync" && !strings.Contains(r.stderr, "--jobs 0") {
			t.Errorf("volboot %v: exit %d, want 2\n%s", args, r.code, r.stderr)
		}
	}
	if r := volboot(t, t.TempDir(), nil, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "volboot ") {
		t.Errorf("version: %d %q", r.code, r.stdout)
	}
}
