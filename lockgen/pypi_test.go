package lockgen

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// TestLockRealPyPI runs the real uv (installed from PyPI into a fresh
// cache with the machine's python3) against PyPI for a tiny manifest.
// Opt-in: VOLBOOT_TEST_PYPI=1. It needs pypi.org and
// files.pythonhosted.org, nothing else.
func TestLockRealPyPI(t *testing.T) {
	if os.Getenv("VOLBOOT_TEST_PYPI") != "1" {
		t.Skip("talks to PyPI: set VOLBOOT_TEST_PYPI=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := zaptest.NewLogger(t)
	env := UVEnv(os.Environ())
	uv, err := UVFinder{CacheDir: filepath.Join(t.TempDir(), "volboot"), Python: "python3", Env: env, Runner: ExecRunner{}, Log: log,
		LookPath: func(string) (string, error) { return "", os.ErrNotExist }}.Find(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if uv.Source != "installed" || uv.Version != UVVersion {
		t.Fatalf("%+v", uv)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "volboot.toml")
	os.WriteFile(file, []byte(`name = "tiny"
[python]
requires = ">=3.11,<3.12"
[lock]
path = "pylock.toml"
[[group]]
name = "core"
requirements = ["six==1.16.0", "attrs"]
[[group]]
name = "extra"
required = false
requirements = ["idna", "six"]
[[group]]
name = "sdists"
required = false
requirements = ["docopt==0.6.2"]
`), 0o644)
	f := &fixture{t: t, dir: dir}
	m := f.manifest(string(must(os.ReadFile(file))))
	req := Request{Manifest: m, Platform: m.DefaultPlatform(), LockFile: filepath.Join(dir, "pylock.toml"), UV: uv, Runner: ExecRunner{},
		Fetcher: HTTPFetcher{Client: &http.Client{Timeout: 2 * time.Minute}}, TempDir: t.TempDir(), Env: env, Jobs: 2, Log: log}
	start := time.Now()
	res, err := Lock(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("locked in %v with %d uv runs:\n%s", time.Since(start), res.UVRuns, res.Data)
	l := parsed(t, res)
	want := map[string]string{
		"six":    `"core" in dependency_groups or "extra" in dependency_groups`,
		"attrs":  `"core" in dependency_groups`,
		"idna":   `"extra" in dependency_groups`,
		"docopt": `"sdists" in dependency_groups`,
	}
	for name, marker := range want {
		p := pkgByName(l, name)
		if p == nil || p.Marker.String() != marker {
			t.Errorf("%s: %+v", name, p)
		}
	}
	if p := pkgByName(l, "six"); p == nil || p.Version != "1.16.0" {
		t.Errorf("six not at 1.16.0")
	}
	if len(res.Problems) != 1 || res.Problems[0].Kind != ProblemSdistOnly || res.Problems[0].Package != "docopt" {
		t.Errorf("problems: %+v", res.Problems)
	}
	// CheckLock: only the sdist-only group fails (volboot builds no sdists yet).
	if len(res.Check.Errors) != 1 || !strings.Contains(res.Check.Errors[0], "group sdists") || !strings.Contains(res.Check.Errors[0], "docopt") {
		t.Errorf("CheckLock: %q", res.Check.Errors)
	}
	// Locking again keeps every pin.
	req.Previous = res.Data
	again, err := Lock(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Changes) != 0 || string(again.Data) != string(res.Data) {
		t.Errorf("locking again changed the lock: %+v", again.Changes)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
