package bootstrap

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/volboot/volboot/bootstrap/venv"
)

const testSite = "lib/python3.11/site-packages"

// testIndex indexes a generation at root planned as files (path -> RECORD
// hash; "" for bytecode, which is named by its store file).
func testIndex(t *testing.T, root string, files map[string]string) *genIndex {
	t.Helper()
	var planned []venv.PlannedFile
	for p, h := range files {
		planned = append(planned, venv.PlannedFile{Path: p, Source: "/store/e1/" + p, Hash: h})
	}
	return newGenIndex(root, venv.Layout{SitePackages: testSite}, planned, "/store")
}

func TestGenIndexValues(t *testing.T) {
	root := t.TempDir()
	ix := testIndex(t, root, map[string]string{
		testSite + "/app/__init__.py":                          "sha256=a",
		testSite + "/app/__pycache__/__init__.cpython-311.pyc": "",
		testSite + "/app/_ext.cpython-311-x86_64-linux-gnu.so": "sha256=b",
		testSite + "/app-1.0.dist-info/METADATA":               "sha256=m",
		testSite + "/app-1.0.dist-info/entry_points.txt":       "sha256=e",
		testSite + "/single.py":                                "sha256=s",
		testSite + "/Zope.Interface-5.0.dist-info/METADATA":    "sha256=z",
		testSite + "/nvidia/cublas/lib/libcublas.so.12":        "sha256=l",
		testSite + "/virtualenv-hook.pth":                      "sha256=p",
		"bin/app":                                              "sha256=x",
	})
	for _, c := range []struct {
		kind      byte
		key, want string
	}{
		{'l', "app", "app/|app/__init__.py"},
		{'l', "app._ext", "_ext.cpython-311-x86_64-linux-gnu.so"},
		{'l', "single", "single.py"},
		{'l', "missing", ""},
		{'l', "nvidia", "nvidia/"},
		{'l', "nvidia.cublas", "cublas/"},
		{'f', testSite + "/app/__init__.py", "sha256=a"},
		{'f', testSite + "/app/__pycache__/__init__.cpython-311.pyc", "store:e1/" + testSite + "/app/__pycache__/__init__.cpython-311.pyc"},
		{'f', testSite + "/{dist:app}/entry_points.txt", "sha256=e"},
		{'f', testSite + "/{dist:app}/RECORD", "-"},
		{'f', testSite + "/{dist:zope_interface}/METADATA", "sha256=z"},
		{'f', testSite + "/app", "dir"},
		{'f', "pyvenv.cfg", "-"},
		{'q', "App", "1"},
		{'q', "zope-interface", "1"},
		{'q', "flash_attn", "0"},
	} {
		if got := ix.value(c.kind, c.key); got != c.want {
			t.Errorf("value(%c, %s) = %q, want %q", c.kind, c.key, got, c.want)
		}
	}
	if got := ix.canonical(testSite + "/app-1.0.dist-info/METADATA"); got != testSite+"/{dist:app}/METADATA" {
		t.Errorf("canonical: %s", got)
	}
	if err := os.WriteFile(filepath.Join(root, "pyvenv.cfg"), []byte("home = /usr\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := ix.value('f', "pyvenv.cfg"); !strings.HasPrefix(got, "sha256:") {
		t.Errorf("a skeleton file is read from the generation: %q", got)
	}
}

// A record made in one generation holds in another exactly when the
// values it depends on are the same there.
func TestSmokeRecordHolds(t *testing.T) {
	root := t.TempDir()
	base := map[string]string{
		testSite + "/app/__init__.py":                    "sha256=a",
		testSite + "/dep/__init__.py":                    "sha256=d1",
		testSite + "/other/__init__.py":                  "sha256=o1",
		testSite + "/dep-1.0.dist-info/entry_points.txt": "sha256=e",
	}
	a := testIndex(t, root, base)
	outside := filepath.Join(t.TempDir(), "libfoo.so")
	if err := os.WriteFile(outside, []byte("elf"), 0o644); err != nil {
		t.Fatal(err)
	}
	report := &smokeReport{
		V: 1,
		mods: []reportMod{
			{name: "app", file: filepath.Join(root, testSite, "app/__init__.py"), paths: []string{filepath.Join(root, testSite, "app")}},
			{name: "dep", file: filepath.Join(root, testSite, "dep/__init__.py")},
			{name: "os", file: "/usr/lib/python3.11/os.py"},
		},
		Missed: []string{"extra", "not a name"},
		Opened: []string{filepath.Join(root, testSite, "dep-1.0.dist-info/entry_points.txt"), "/proc/cpuinfo"},
		Mapped: []string{outside},
		Dists:  []string{"*", "Dep"},
	}
	rec, why := a.recordFor("app", "00112233445566778899aabbccddeeff", report)
	if rec == nil {
		t.Fatal(why)
	}
	keys := map[string]bool{}
	for _, d := range rec.Deps {
		keys[string(d.Kind)+" "+d.Key] = true
	}
	for _, k := range []string{"l app", "l dep", "l extra", "l sitecustomize", "f " + testSite + "/dep/__init__.py",
		"f " + testSite + "/{dist:dep}/entry_points.txt", "x " + outside, "x /usr/lib/python3.11/os.py", "a all", "q dep", "p site"} {
		if !keys[k] {
			t.Errorf("record lacks %q", k)
		}
	}
	for _, k := range []string{"l os", "x /proc/cpuinfo", "l other", "s libs"} {
		if keys[k] {
			t.Errorf("record has %q", k)
		}
	}
	if ok, why := a.holds(rec, rec.Interp); !ok {
		t.Errorf("the record does not hold in its own generation: %s", why)
	}
	if ok, _ := a.holds(rec, strings.Repeat("0", 32)); ok {
		t.Error("the record holds for another interpreter")
	}

	with := func(change func(m map[string]string)) *genIndex {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		change(m)
		return testIndex(t, root, m)
	}
	for _, c := range []struct {
		name  string
		ix    *genIndex
		holds bool
	}{
		{"other changed", with(func(m map[string]string) { m[testSite+"/other/__init__.py"] = "sha256=o2" }), true},
		{"dep's version changed, same entry points", with(func(m map[string]string) {
			delete(m, testSite+"/dep-1.0.dist-info/entry_points.txt")
			m[testSite+"/dep-1.1.dist-info/entry_points.txt"] = "sha256=e"
		}), true},
		{"dep changed", with(func(m map[string]string) { m[testSite+"/dep/__init__.py"] = "sha256=d2" }), false},
		{"extra added", with(func(m map[string]string) { m[testSite+"/extra.py"] = "sha256=x" }), false},
		{"a distribution added", with(func(m map[string]string) { m[testSite+"/new-1.0.dist-info/METADATA"] = "sha256=n" }), false},
		{"dep shadowed by an extension", with(func(m map[string]string) { m[testSite+"/dep.cpython-311-x86_64-linux-gnu.so"] = "sha256=s" }), false},
	} {
		if ok, why := c.ix.holds(rec, rec.Interp); ok != c.holds {
			t.Errorf("%s: holds %v (%s), want %v", c.name, ok, why, c.holds)
		}
	}
	if err := os.WriteFile(outside, []byte("another elf"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.holds(rec, rec.Interp); ok {
		t.Error("the record holds after a library outside the generation changed")
	}

	// An import that started a process gets no record.
	report.Blind = []string{"it started a process (subprocess.Popen)"}
	if rec, _ := a.recordFor("app", rec.Interp, report); rec != nil {
		t.Error("a record for an import that started a process")
	}
}

func TestSmokeRecordRoundTrip(t *testing.T) {
	rec := &smokeRecord{Module: "app", Interp: "00112233445566778899aabbccddeeff", Deps: []smokeDep{
		{'f', "lib/a b/c\td%e\n", "sha256=x"},
		{'l', "app", ""},
		{'x', "/usr/lib/x", "-"},
	}}
	data := rec.marshal()
	got, err := parseSmokeRecord(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(got, rec) {
		t.Errorf("round trip: %+v, want %+v", got, rec)
	}
	for i := 1; i < len(data); i++ {
		if r, err := parseSmokeRecord(data[:i]); err == nil {
			t.Fatalf("a record cut to %d bytes parses: %+v", i, r)
		}
	}
	if r, err := parseSmokeRecord(nil); r != nil || err != nil {
		t.Errorf("an empty record: %v, %v", r, err)
	}
}

// FuzzSmokeRecord: a record that parses is written back to the same
// bytes, and nothing panics.
func FuzzSmokeRecord(f *testing.F) {
	f.Add((&smokeRecord{Module: "torch", Interp: "00112233445566778899aabbccddeeff", Deps: []smokeDep{{'a', "all", "ab"}, {'f', "p%", "v"}}}).marshal())
	f.Add([]byte("volboot-smoke 1\nmodule\tm\ninterp\t00112233445566778899aabbccddeeff\nend\t0\n"))
	f.Add([]byte("volboot-smoke 1\nmodule\tm\ninterp\t00112233445566778899aabbccddeeff\nl\tx\t%0A\nend\t1\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseSmokeRecord(data)
		if err != nil || r == nil {
			return
		}
		if out := r.marshal(); !bytes.Equal(out, data) {
			t.Fatalf("parsed and written back:\n%q\nwas\n%q", out, data)
		}
	})
}

// FuzzSmokeReport: a report either parses into modules of the shape it
// claims or is refused; nothing panics, and recordFor takes any parsed
// report.
func FuzzSmokeReport(f *testing.F) {
	good, _ := json.Marshal(map[string]any{
		"v": 1, "prefix": "/vol/envs/x", "modules": []any{[]any{"app", "/vol/envs/x/app.py", []any{}}},
		"missed": []string{"extra"}, "opened": []string{"/etc/hosts"}, "listed": []string{"/vol/envs/x/lib"},
		"dists": []string{"*"}, "mapped": []string{"/usr/lib/libc.so.6"}, "blind": []string{},
	})
	f.Add(good)
	f.Add([]byte(`{"v": 1, "blind": ["its report did not encode"]}`))
	f.Add([]byte(`{"v": 1, "modules": [["a", 1, []]]}`))
	f.Add([]byte(`{"v": 2}`))
	root := f.TempDir()
	ix := testIndex(&testing.T{}, root, map[string]string{testSite + "/app.py": "sha256=a"})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseSmokeReport(data)
		if err != nil {
			return
		}
		if len(r.mods) != len(r.Modules) {
			t.Fatalf("%d modules parsed of %d", len(r.mods), len(r.Modules))
		}
		if rec, _ := ix.recordFor("app", "00112233445566778899aabbccddeeff", r); rec != nil {
			if back, err := parseSmokeRecord(rec.marshal()); err != nil || !reflect.DeepEqual(back, rec) {
				t.Fatalf("a record made from a report does not read back: %v", err)
			}
		}
	})
}
