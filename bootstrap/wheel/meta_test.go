package wheel

import (
	"strings"
	"testing"
)

func TestParseRecord(t *testing.T) {
	rec := "a/b.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n\"we,ird.py\",sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=,0\nx.dist-info/RECORD,,\n"
	m, err := ParseRecord([]byte(rec))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m["we,ird.py"].Algorithm != "sha256" || m["x.dist-info/RECORD"].Size != -1 || len(m["a/b.py"].Digest) != 32 {
		t.Fatalf("%+v", m)
	}
	for _, bad := range []string{
		"a,md5=1B2M2Y8AsgTpgAmY7PhCfg,0\n",
		"a,sha256=short,0\n",
		"a,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,-1\n",
		"a,,\na,,\n",
		"a,b\n",
		",,\n",
	} {
		if _, err := ParseRecord([]byte(bad)); err == nil || !strings.Contains(err.Error(), "line") {
			t.Errorf("ParseRecord(%q) = %v, want an error naming the line", bad, err)
		}
	}
}

func TestParseWheelInfo(t *testing.T) {
	wi, err := ParseWheelInfo([]byte("Wheel-Version: 1.0\nGenerator: bdist_wheel (0.40.0)\nRoot-Is-Purelib: false\nTag: cp311-cp311-linux_x86_64\n"))
	if err != nil || wi.RootIsPurelib || wi.WheelVersion != "1.0" {
		t.Fatalf("%+v %v", wi, err)
	}
	for _, bad := range []string{"Wheel-Version: 2.0\nRoot-Is-Purelib: true\n", "Wheel-Version: 1\nRoot-Is-Purelib: true\n",
		"Root-Is-Purelib: true\n", "Wheel-Version: 1.0\nRoot-Is-Purelib: yes\n", "Wheel-Version: 1.0\n"} {
		if _, err := ParseWheelInfo([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestParseEntryPoints(t *testing.T) {
	eps, err := ParseEntryPoints([]byte("[console_scripts]\npip = pip._internal.cli.main:main\npip3=pip._internal.cli.main:main [extra]\n\n[gui_scripts]\ng = m.n:Cls.run\n[x]\nbad line\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 3 || eps[1].Name != "pip3" || eps[1].Attr != "main" || !eps[2].GUI || eps[2].Attr != "Cls.run" {
		t.Fatalf("%+v", eps)
	}
	for _, bad := range []string{"[console_scripts]\n../x = a:b\n", "[console_scripts]\nx = a b:c\n", "[console_scripts]\nnoequals\n"} {
		if _, err := ParseEntryPoints([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte("a/b.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\nx/RECORD,,\n"))
	f.Add([]byte("\"q,\"\"\",,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseRecord(data)
		if err != nil {
			return
		}
		for p, e := range m {
			if p == "" || p != e.Path {
				t.Fatalf("bad entry %q %+v", p, e)
			}
			if e.Algorithm != "" {
				h, err := newHash(e.Algorithm)
				if err != nil || h.Size() != len(e.Digest) {
					t.Fatalf("digest size %d for %s", len(e.Digest), e.Algorithm)
				}
			}
		}
	})
}

func FuzzParseWheelInfo(f *testing.F) {
	f.Add([]byte("Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"))
	f.Add([]byte("Wheel-Version: 1.9\n Root-Is-Purelib: true\n\nbody"))
	f.Fuzz(func(t *testing.T, data []byte) {
		wi, err := ParseWheelInfo(data)
		if err == nil && !strings.HasPrefix(wi.WheelVersion, "1.") {
			t.Fatalf("accepted Wheel-Version %q", wi.WheelVersion)
		}
	})
}

func FuzzParseEntryPoints(f *testing.F) {
	f.Add([]byte("[console_scripts]\na = b.c:d\n[gui_scripts]\ne=f\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		eps, err := ParseEntryPoints(data)
		if err != nil {
			return
		}
		for _, e := range eps {
			if checkScriptName(e.Name) != nil || !isDottedName(e.Module) {
				t.Fatalf("accepted %+v", e)
			}
		}
	})
}

// FuzzCheckName holds checkName to a plain statement of the rule: no
// control character or backslash, not absolute, and no empty, "." or ".."
// component once a directory's trailing slash is dropped.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"a/b.py", "../x", "/abs", "a//b", "a/./b", "c:/x", "dir/", "a\x01b", "a\\b", "a/..", "./a", "dir//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		valid := name != "" && !strings.HasPrefix(name, "/") && !(len(name) >= 2 && name[1] == ':') &&
			!strings.ContainsAny(name, "\\\x7f") && !strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 })
		if valid {
			for _, el := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
				if el == ".." || el == "." || el == "" {
					valid = false
				}
			}
		}
		if err := checkName(name); (err == nil) != valid {
			t.Fatalf("checkName(%q) = %v, want valid %v", name, err, valid)
		}
	})
}
