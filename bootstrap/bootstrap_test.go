package bootstrap

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/volboot/volboot/bootstrap/interp"
	"github.com/volboot/volboot/bootstrap/pylock"
	"github.com/volboot/volboot/bootstrap/wheel"
	"github.com/volboot/volboot/manifests"
)

func TestTopLevelModules(t *testing.T) {
	e := &wheel.Entry{Data: "pkg-1.0.data", Files: []wheel.File{
		{Path: "setuptools/__init__.py"},
		{Path: "setuptools/command/build.py"},
		{Path: "pkg_resources/__init__.py"},
		{Path: "_distutils_hack/__init__.py"},
		{Path: "distutils-precedence.pth"},
		{Path: "six.py"},
		{Path: "_cffi_backend.cpython-311-x86_64-linux-gnu.so"},
		{Path: "__pycache__/six.cpython-311.pyc"},
		{Path: "pkg-1.0.dist-info/METADATA"},
		{Path: "pkg-1.0.data/purelib/extra_mod.py"},
		{Path: "pkg-1.0.data/scripts/tool"},
		{Path: "nvidia/cublas/lib/libcublas.so.12"},
	}}
	got := topLevelModules(e)
	want := []string{"extra_mod", "nvidia", "pkg_resources", "setuptools", "six"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("topLevelModules = %v, want %v", got, want)
	}
	private := &wheel.Entry{Files: []wheel.File{{Path: "_only/__init__.py"}}}
	if got := topLevelModules(private); !reflect.DeepEqual(got, []string{"_only"}) {
		t.Fatalf("a private-only wheel: %v", got)
	}
}

func TestGenerationIDIsContentAddressed(t *testing.T) {
	info := &interp.Info{Implementation: "cpython", Version: "3.11.7", Major: 3, Minor: 11, Platform: "linux-x86_64", BaseExecutable: "/usr/bin/python3"}
	pkgs := []PackageRecord{{Name: "a", SHA256: "aa", Requested: true}, {Name: "b", SHA256: "bb"}}
	groups := []GroupOutcome{{Name: "core", State: GroupInstalled}, {Name: "opt", State: GroupDegraded, Reason: "x"}}
	id := generationID(info, pkgs, groups)
	if id != generationID(info, pkgs, []GroupOutcome{{Name: "core", State: GroupInstalled}, {Name: "opt", State: GroupDegraded, Reason: "another reason"}}) {
		t.Error("the reason text changed the id")
	}
	for name, other := range map[string]string{
		"wheel":       generationID(info, []PackageRecord{{Name: "a", SHA256: "ab", Requested: true}, {Name: "b", SHA256: "bb"}}, groups),
		"requested":   generationID(info, []PackageRecord{{Name: "a", SHA256: "aa"}, {Name: "b", SHA256: "bb"}}, groups),
		"group state": generationID(info, pkgs, []GroupOutcome{{Name: "core", State: GroupInstalled}, {Name: "opt", State: GroupInstalled}}),
		"interpreter": generationID(&interp.Info{Implementation: "cpython", Version: "3.11.8", Major: 3, Minor: 11, Platform: "linux-x86_64", BaseExecutable: "/usr/bin/python3"}, pkgs, groups),
	} {
		if other == id {
			t.Errorf("changing the %s kept the id %s", name, id)
		}
	}
}

func TestMirrorsFor(t *testing.T) {
	c := &Config{Manifest: &manifests.Manifest{Indexes: []manifests.Index{
		{URL: "https://download.pytorch.org/whl/cu128", Mirrors: []string{"https://mirror.example/cu128/"}},
	}}}
	s := &pylock.Selected{Wheel: &pylock.Wheel{URL: "https://download.pytorch.org/whl/cu128/torch-2.8.0%2Bcu128-cp311-cp311-manylinux_2_28_x86_64.whl"}}
	got := c.mirrorsFor(s.Wheel.URL)
	want := []string{s.Wheel.URL, "https://mirror.example/cu128/torch-2.8.0%2Bcu128-cp311-cp311-manylinux_2_28_x86_64.whl"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("mirrorsFor = %v", got)
	}
	other := &pylock.Selected{Wheel: &pylock.Wheel{URL: "https://files.example/x-1-py3-none-any.whl"}}
	if got := c.mirrorsFor(other.Wheel.URL); len(got) != 1 {
		t.Fatalf("a wheel of no listed index got mirrors %v", got)
	}
}

func TestStateRoundTripAndBadFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	st, err := ReadState(p)
	if err != nil || len(st.Keys) != 0 {
		t.Fatalf("missing state: %v %+v", err, st)
	}
	st.Keys["k"] = "g"
	st.Generations["g"] = &Generation{ID: "g", Groups: []GroupOutcome{{Name: "core", State: GroupInstalled}}}
	if err := st.Write(p); err != nil {
		t.Fatal(err)
	}
	back, err := ReadState(p)
	if err != nil || back.Keys["k"] != "g" || back.Generations["g"].Groups[0].Name != "core" {
		t.Fatalf("round trip: %v %+v", err, back)
	}
	for _, bad := range []string{"{", `{"schema": 99}`} {
		os.WriteFile(p, []byte(bad), 0o644)
		if _, err := ReadState(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("state %q: %v", bad, err)
		}
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"schema":1,"keys":{"a":"b"},"generations":{"b":{"id":"b"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseState("state.json", data)
		if err == nil && (st.Keys == nil || st.Generations == nil) {
			t.Fatal("nil maps after a successful parse")
		}
	})
}

// TestRetryAfterFromASkewedClock: a degraded group waits for its retry
// time, but never longer than the maximum backoff, even when a writer whose
// clock ran ahead set a retry time a year away.
func TestRetryAfterFromASkewedClock(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *Generation {
		ra := now.Add(d)
		return &Generation{Groups: []GroupOutcome{{Name: "asr", State: GroupDegraded, RetryAfter: &ra}}}
	}
	for _, c := range []struct {
		in  time.Duration
		due bool
	}{{-time.Minute, true}, {time.Hour, false}, {maxRetryDelay, false}, {maxRetryDelay + time.Minute, true}, {365 * 24 * time.Hour, true}} {
		if got := at(c.in).dueForRetry(now); got != c.due {
			t.Errorf("retry_after now%+v: due %v, want %v", c.in, got, c.due)
		}
	}
}
