package integration

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/volboot/volboot/lockgen/lockgentest"
)

const lockManifest = `name = "t"
[python]
requires = ">=3.11,<3.12"
[lock]
path = "pylock.toml"
[[group]]
name = "core"
requirements = ["alpha==1.0"]
[[group]]
name = "extra"
required = false
requirements = ["beta"]
`

// TestLockCommand drives `volboot lock` with the fake uv (this test binary
// under the name uv) over real wheels, then installs the lock it wrote.
func TestLockCommand(t *testing.T) {
	dir := t.TempDir()
	wheels := filepath.Join(dir, "wheels")
	os.Mkdir(wheels, 0o755)
	files := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b, ok := files[r.URL.Path]; ok {
			w.Write(b)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	u := lockgentest.Universe{Packages: map[string][]lockgentest.Version{}}
	add := func(name, version string, deps ...string) {
		fn, _ := writeWheel(t, wheels, name, version)
		b, err := os.ReadFile(filepath.Join(wheels, fn))
		if err != nil {
			t.Fatal(err)
		}
		files["/"+fn] = b
		u.Packages[name] = append(u.Packages[name], lockgentest.Version{Version: version, Deps: deps,
			Files: []lockgentest.File{{Kind: "wheel", URL: srv.URL + "/" + fn, Size: int64(len(b)), SHA256: lockgentest.Digest(b)}}})
	}
	add("alpha", "1.0", "common")
	add("beta", "2.0", "common")
	add("common", "3.0")
	bin := lockgentest.Install(t, t.TempDir())
	env, _ := lockgentest.WriteUniverse(t, t.TempDir(), u)
	os.WriteFile(filepath.Join(dir, "volboot.toml"), []byte(lockManifest), 0o644)
	lock := func(more ...string) result {
		return volboot(t, dir, env, append([]string{"lock", "--manifest", "volboot.toml", "--uv", filepath.Join(bin, "uv")}, more...)...)
	}

	r := lock()
	if r.code != 0 || !strings.Contains(r.stdout, "wrote pylock.toml: 3 packages (core 2, extra 2; 0 with no wheel)") {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	data, err := os.ReadFile(filepath.Join(dir, "pylock.toml"))
	if err != nil || !strings.Contains(string(data), `marker = "'core' in dependency_groups or 'extra' in dependency_groups"`) {
		t.Fatalf("lock: %v\n%s", err, data)
	}
	if r := volboot(t, dir, nil, "manifest", "check", "volboot.toml"); r.code != 0 {
		t.Errorf("manifest check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := lock("--check"); r.code != 0 || !strings.Contains(r.stdout, "ok: pylock.toml satisfies volboot.toml") {
		t.Errorf("lock --check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The lock installs: both groups, common once.
	vol := t.TempDir()
	s := volboot(t, dir, nil, "sync", "--manifest", "volboot.toml", "--volume", vol)
	if s.code != 0 || !strings.Contains(s.stdout, "core         installed") || !strings.Contains(s.stdout, "extra        installed") {
		t.Fatalf("sync: exit %d\n%s%s", s.code, s.stdout, s.stderr)
	}

	// A new release: kept out until asked for.
	add("alpha", "1.1", "common")
	add("common", "3.1")
	env, _ = lockgentest.WriteUniverse(t, t.TempDir(), u)
	if r := lock(); r.code != 0 || strings.Contains(r.stdout, "changed:") {
		t.Errorf("relock moved pins: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := lock("--upgrade-package", "common"); r.code != 0 || !strings.Contains(r.stdout, "changed: common 3.0 -> 3.1") || strings.Contains(r.stdout, "alpha") {
		t.Errorf("--upgrade-package common: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The manifest moves on: --check says how, exit 1.
	os.WriteFile(filepath.Join(dir, "volboot.toml"), []byte(strings.Replace(lockManifest, `["beta"]`, `["beta", "gamma"]`, 1)), 0o644)
	if r := lock("--check"); r.code != 1 || !strings.Contains(r.stdout, "stale: group extra's requirements changed since the lock was made: now gamma") ||
		!strings.Contains(r.stdout, "error: volboot.toml:12: gamma is not in the lock") {
		t.Errorf("lock --check of a changed manifest: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// gamma cannot be resolved: the optional group is left out, the rest
	// is written, exit 1 with uv's words.
	r = lock()
	if r.code != 1 || !strings.Contains(r.stdout, "group extra (optional) cannot be resolved") || !strings.Contains(r.stdout, "gamma was not found in the package registry") ||
		!strings.Contains(r.stdout, "extra not locked") || !strings.Contains(r.stderr, "pylock.toml written, but 1 group(s) could not be locked") {
		t.Errorf("unresolvable optional group: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := lock("--upgrade-package", "x", "--check"); r.code != 2 {
		t.Errorf("--check with --upgrade-package: exit %d", r.code)
	}
	os.Remove(filepath.Join(dir, "pylock.toml"))
	if r := lock("--upgrade-package", "alpha"); r.code != 2 || !strings.Contains(r.stderr, "there is no lock at pylock.toml") {
		t.Errorf("--upgrade-package without a lock: exit %d\n%s", r.code, r.stderr)
	}
	if r := lock("--check"); r.code != 1 || !strings.Contains(r.stderr, "pylock.toml does not exist") {
		t.Errorf("--check without a lock: exit %d\n%s", r.code, r.stderr)
	}
}
