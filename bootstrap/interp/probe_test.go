package interp

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/volboot/volboot/bootstrap/pep425"
)

func TestProbeRealPython(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not on PATH")
	}
	info, err := Probe(context.Background(), "python3", Cache{Dir: t.TempDir(), Write: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(info.Executable, "-c", "import sys,sysconfig;print(sys.version.split()[0]);print(sys.implementation.cache_tag);print(sysconfig.get_config_var('EXT_SUFFIX'))").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Fields(string(out))
	if info.Version != want[0] || info.CacheTag != want[1] || info.ExtSuffix != want[2] {
		t.Fatalf("probe %+v disagrees with the interpreter: %v", info, want)
	}
	if info.VenvPaths["purelib"] != "lib/python"+info.PyVersion()+"/site-packages" || info.VenvPaths["scripts"] != "bin" {
		t.Fatalf("venv paths %v", info.VenvPaths)
	}
	if !filepath.IsAbs(info.BaseExecutable) {
		t.Fatalf("base executable %q", info.BaseExecutable)
	}
	tags := info.Tags()
	if len(tags) < 10 {
		t.Fatalf("only %d tags", len(tags))
	}
	abi := info.ABI()
	if tags[0].Interpreter != "cp"+strings.ReplaceAll(info.PyVersion(), ".", "") || tags[0].ABI != abi {
		t.Errorf("best tag %v, want the interpreter's own ABI %s", tags[0], abi)
	}
	has := func(s string) bool {
		for _, tg := range tags {
			if tg.String() == s {
				return true
			}
		}
		return false
	}
	if !has("py3-none-any") {
		t.Error("py3-none-any missing")
	}
	if info.Libc == "glibc" {
		if info.LibcMajor != 2 || info.LibcMinor < 17 {
			t.Errorf("glibc %d.%d", info.LibcMajor, info.LibcMinor)
		}
		if !has("cp311-abi3-manylinux2014_"+info.Machine) && info.PyVersion() == "3.11" {
			t.Errorf("manylinux2014 abi3 tag missing for %s", info.Machine)
		}
		if !has(pep425.Tag{Interpreter: tags[0].Interpreter, ABI: abi, Platform: "manylinux_2_17_" + info.Machine}.String()) {
			t.Errorf("manylinux_2_17 tag missing")
		}
	}
}

// TestProbeCache probes a fake interpreter (a shell script that prints
// canned JSON and counts its runs): a second probe reads the cache; a
// changed interpreter (size/mtime) is probed again.
func TestProbeCache(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	fake := filepath.Join(dir, "python")
	body := `#!/bin/sh
echo run >> ` + count + `
cat <<'JSON'
{"executable": "/opt/py/bin/python3.12", "base_executable": "/opt/py/bin/python3.12", "implementation": "cpython",
 "version": "3.12.1", "major": 3, "minor": 12, "micro": 1, "releaselevel": "final", "serial": 0,
 "cache_tag": "cpython-312", "soabi": "cpython-312-aarch64-linux-gnu", "ext_suffix": ".cpython-312-aarch64-linux-gnu.so",
 "platform": "linux-aarch64", "bits": 64, "glibc": "glibc 2.31", "lib64": true, "venv_scheme": "venv",
 "venv_paths": {"purelib": "lib/python3.12/site-packages", "platlib": "lib/python3.12/site-packages", "scripts": "bin"}}
JSON
`
	if err := os.WriteFile(fake, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	cache := Cache{Dir: filepath.Join(dir, "cache"), Write: true}
	runs := func() int {
		b, _ := os.ReadFile(count)
		return strings.Count(string(b), "run")
	}
	for i := 0; i < 2; i++ {
		info, err := Probe(context.Background(), fake, cache, nil)
		if err != nil {
			t.Fatal(err)
		}
		if info.ABI() != "cp312" || info.Machine != "aarch64" || info.Libc != "glibc" || info.LibcMinor != 31 {
			t.Fatalf("%+v", info)
		}
		if tg := info.Tags()[0].String(); tg != "cp312-cp312-manylinux_2_31_aarch64" {
			t.Fatalf("best tag %s", tg)
		}
	}
	if runs() != 1 {
		t.Fatalf("interpreter ran %d times, want 1 (cached)", runs())
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(fake, later, later)
	if _, err := Probe(context.Background(), fake, cache, nil); err != nil {
		t.Fatal(err)
	}
	if runs() != 2 {
		t.Fatalf("changed interpreter not probed again (%d runs)", runs())
	}

	// A reader that must change nothing (status) uses the cache but
	// never writes it.
	ro := Cache{Dir: filepath.Join(dir, "ro-cache")}
	for i := 0; i < 2; i++ {
		if _, err := Probe(context.Background(), fake, ro, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(ro.Dir); !os.IsNotExist(err) {
		t.Fatalf("a read-only probe wrote its cache: %v", err)
	}
	if runs() != 4 {
		t.Fatalf("%d runs, want 4 (nothing cached by read-only probes)", runs())
	}
	if _, err := Probe(context.Background(), fake, Cache{Dir: cache.Dir}, nil); err != nil || runs() != 4 {
		t.Fatalf("a read-only probe did not use the written cache: %v, %d runs", err, runs())
	}

	// A cache that cannot be written (a file where its directory should
	// be) costs the cache, not the probe.
	blocked := filepath.Join(dir, "blocked")
	if err := os.WriteFile(blocked, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Probe(context.Background(), fake, Cache{Dir: filepath.Join(blocked, "cache"), Write: true}, nil); err != nil {
		t.Fatalf("an unwritable cache failed the probe: %v", err)
	}
}

func TestProbeErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "python")
	os.WriteFile(bad, []byte("#!/bin/sh\necho boom >&2\nexit 3\n"), 0o755)
	_, err := Probe(context.Background(), bad, Cache{}, nil)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Probe(context.Background(), "no-such-python-volboot", Cache{}, nil); err == nil || !strings.Contains(err.Error(), "VOLBOOT_PYTHON") {
		t.Fatalf("err = %v", err)
	}
}
