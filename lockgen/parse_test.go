package lockgen

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/volboot/volboot/bootstrap/pep508"
)

// uvOutput is uv 0.13.9's pylock.toml as it wrote it for `attrs` and
// `six==1.16.0` (trimmed to two packages), plus a marker.
const uvOutput = `lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.11"

[[packages]]
name = "attrs"
version = "26.1.0"
sdist = { url = "https://files.pythonhosted.org/packages/9a/8e/82a0fe20a541c03148528be8cac2408564a6c9a0cc7e9171802bc1d26985/attrs-26.1.0.tar.gz", upload-time = 2026-03-19T14:22:25Z, size = 952055, hashes = { sha256 = "d03ceb89cb322a8fd706d4fb91940737b6642aa36998fe130a9bc96c985eff32" } }
wheels = [{ url = "https://files.pythonhosted.org/packages/64/b4/17d4b0b2a2dc85a6df63d1157e028ed19f90d4cd97c36717afef2bc2f395/attrs-26.1.0-py3-none-any.whl", upload-time = 2026-03-19T14:22:23Z, size = 67548, hashes = { sha256 = "c647aa4a12dfbad9333ca4e71fe62ddc36f4e63b2d260a37a8b83d2f043ac309" } }]

[[packages]]
name = "nvidia-nccl-cu12"
version = "2.27.3"
marker = "platform_machine == 'x86_64' and sys_platform == 'linux'"
wheels = [{ url = "https://files.pythonhosted.org/packages/5c/5b/4e4fff7bad39adf89f735f2bc87248c81db71205b62bcc0d5ca5b606b3c3/nvidia_nccl_cu12-2.27.3-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", upload-time = 2025-06-03T21:58:04.013Z, size = 322364134, hashes = { sha256 = "adf27ccf4238253e0b826bce3ff5fa532d65fc42322c8bfdfaf28024c0fbe039" } }]

[[packages]]
name = "tinypkg"
version = "1.0"
archive = { url = "http://127.0.0.1:8765/tinypkg-1.0-py3-none-any.whl", hashes = { sha256 = "f4bbc5a8f06152fab2a029426e90393e6f0d16d73eeb572f529764aa10c1da89" } }
`

func TestParseUVLock(t *testing.T) {
	pkgs, err := ParseUVLock("pylock.toml", []byte(uvOutput))
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 3 {
		t.Fatalf("%d packages", len(pkgs))
	}
	a := pkgs[0]
	if a.Name != "attrs" || a.Version != "26.1.0" || a.Sdist == nil || a.Sdist.Size != 952055 || a.Sdist.UploadTime != "2026-03-19T14:22:25Z" ||
		len(a.Wheels) != 1 || a.Wheels[0].SHA256 != "c647aa4a12dfbad9333ca4e71fe62ddc36f4e63b2d260a37a8b83d2f043ac309" {
		t.Errorf("attrs: %+v", a)
	}
	if n := pkgs[1]; n.Marker != "platform_machine == 'x86_64' and sys_platform == 'linux'" || n.Wheels[0].UploadTime != "2025-06-03T21:58:04.013Z" {
		t.Errorf("nccl: %+v", n)
	}
	if tp := pkgs[2]; tp.Archive == nil || tp.Archive.Size != -1 {
		t.Errorf("tinypkg: %+v", tp)
	}
}

func TestParseUVLockRefuses(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"no sha256", `hashes = { sha256 = "c647aa4a12dfbad9333ca4e71fe62ddc36f4e63b2d260a37a8b83d2f043ac309" }`, `hashes = { md5 = "x" }`, "uv wrote no sha256"},
		{"no size", `size = 67548, `, ``, "package attrs 26.1.0: wheel 1: uv wrote no size"},
		{"no url", `url = "https://files.pythonhosted.org/packages/9a/8e/82a0fe20a541c03148528be8cac2408564a6c9a0cc7e9171802bc1d26985/attrs-26.1.0.tar.gz", `, ``, "sdist: uv wrote no url"},
		{"path", `url = "https://files.pythonhosted.org/packages/9a/8e/82a0fe20a541c03148528be8cac2408564a6c9a0cc7e9171802bc1d26985/attrs-26.1.0.tar.gz"`, `path = "attrs.tar.gz"`, "a local path"},
		{"bad sha256", `sha256 = "d03ceb89cb322a8fd706d4fb91940737b6642aa36998fe130a9bc96c985eff32"`, `sha256 = "d03c"`, "not 64 hex digits"},
		{"unknown key", `name = "attrs"`, "name = \"attrs\"\ndependencies = []", `"packages.dependencies"`},
		{"twice", `name = "tinypkg"`, `name = "Attrs"`, "appears twice"},
		{"bad version", `version = "26.1.0"`, `version = "twenty"`, "version \"twenty\""},
		{"bad marker", `marker = "platform_machine == 'x86_64' and sys_platform == 'linux'"`, `marker = "platform_machine = 'x86_64'"`, "marker"},
		{"vcs", `archive = { url = "http://127.0.0.1:8765/tinypkg-1.0-py3-none-any.whl", hashes = { sha256 = "f4bbc5a8f06152fab2a029426e90393e6f0d16d73eeb572f529764aa10c1da89" } }`, `vcs = { type = "git", url = "https://github.com/x/y", commit-id = "abc" }`, "from a vcs source"},
		{"lock-version", `lock-version = "1.0"`, `lock-version = "2.0"`, "lock-version"},
		{"not a URL", `url = "http://127.0.0.1:8765/tinypkg-1.0-py3-none-any.whl"`, `url = "ftp://host/x.whl"`, "is not an http(s) URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(uvOutput, tc.from, tc.to, 1)
			if doc == uvOutput {
				t.Fatalf("test case changes nothing")
			}
			_, err := ParseUVLock("pylock.toml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// What uv 0.13.9 said with download.pytorch.org unreachable.
const uvDNSFailure = `error: Request failed after 3 retries in 5.7s
  cause: Failed to fetch: ` + "`https://download.pytorch.org/whl/cu128/torchaudio/`" + `
  cause: error sending request for url (https://download.pytorch.org/whl/cu128/torchaudio/)
  cause: client error (Connect)
  cause: dns error
  cause: error resolving DNS
  cause: failed to lookup address information: Name or service not known
`

func TestDiagnoseUV(t *testing.T) {
	d := DiagnoseUV(uvDNSFailure)
	if !d.Network || d.URL != "https://download.pytorch.org/whl/cu128/torchaudio/" {
		t.Errorf("%+v", d)
	}
	d = DiagnoseUV(strings.ReplaceAll(uvDNSFailure, "`", ""))
	if d.URL != "https://download.pytorch.org/whl/cu128/torchaudio/" {
		t.Errorf("without backticks: %+v", d)
	}
	conflict := "  × No solution found when resolving dependencies:\n  ╰─▶ Because whisperx==3.7.4 depends on numpy>=2.0.2,<2.1.0 and you require numpy==2.2.0, we can conclude that your requirements are unsatisfiable.\n"
	if d := DiagnoseUV(conflict); d.Network || d.URL != "" {
		t.Errorf("a conflict read as %+v", d)
	}
}

func TestCombineMarker(t *testing.T) {
	for _, tc := range []struct {
		terms []markerTerm
		want  string
	}{
		{[]markerTerm{{group: "a"}}, "'a' in dependency_groups"},
		{[]markerTerm{{group: "a"}, {group: "b"}}, "'a' in dependency_groups or 'b' in dependency_groups"},
		{[]markerTerm{{group: "a", env: "x == '1' or y == '2'"}}, "(x == '1' or y == '2') and 'a' in dependency_groups"},
		{[]markerTerm{{group: "a", env: "e"}, {group: "b", env: "e"}}, "(e) and ('a' in dependency_groups or 'b' in dependency_groups)"},
		{[]markerTerm{{group: "a", env: "e"}, {group: "b"}, {group: "c", env: "e"}}, "((e) and ('a' in dependency_groups or 'c' in dependency_groups)) or ('b' in dependency_groups)"},
	} {
		if got := combineMarker(tc.terms); got != tc.want {
			t.Errorf("combineMarker(%v) = %q, want %q", tc.terms, got, tc.want)
		}
	}
}

// The emitted document reads back with the same values.
func TestEncodeRoundTrip(t *testing.T) {
	pkgs, err := ParseUVLock("pylock.toml", []byte(uvOutput))
	if err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, pkgs, "a \"quoted\"\\ \n\tcomment")
}

func checkRoundTrip(t *testing.T, pkgs []Resolved, comment string) {
	t.Helper()
	d := &Document{Comments: []string{comment}, RequiresPython: "==3.11.*", DependencyGroups: []string{"g"}, DefaultGroups: []string{"g"},
		Tool: Tool{Resolver: "uv x", Requirements: []GroupRequirements{{Group: "g", Requirements: []string{`a; b == "c\"d"`}}}, Unlocked: []Unlocked{{Group: "h", Reason: "a\nb"}}}}
	for _, p := range pkgs {
		d.Packages = append(d.Packages, Package{Resolved: p, Marker: combineMarker([]markerTerm{{group: "g", env: p.Marker}}), Groups: []string{"g"}})
	}
	data := d.Encode()
	back, err := ParseUVLock("back", []byte(strings.Split(strings.ReplaceAll(string(data), "created-by = \"volboot\"", "created-by = \"uv\""), "\ndependency-groups")[0]+"\n"+packagesOnly(data)))
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if len(back) != len(pkgs) {
		t.Fatalf("%d packages back, want %d", len(back), len(pkgs))
	}
	for i := range pkgs {
		a, b := pkgs[i], back[i]
		b.Marker = a.Marker // the marker changed on purpose
		if fmt.Sprintf("%+v|%+v|%+v|%+v", a.Name, a.Version, art(a.Sdist), arts(a.Wheels)) != fmt.Sprintf("%+v|%+v|%+v|%+v", b.Name, b.Version, art(b.Sdist), arts(b.Wheels)) ||
			fmt.Sprint(art(a.Archive)) != fmt.Sprint(art(b.Archive)) || a.RequiresPython != b.RequiresPython || a.Index != b.Index {
			t.Errorf("package %d changed:\n%+v\n%+v", i, a, b)
		}
	}
	var raw struct {
		Tool struct {
			Volboot struct {
				Requirements map[string][]string `toml:"requirements"`
				Unlocked     []struct{ Reason string }
			} `toml:"volboot"`
		} `toml:"tool"`
	}
	if err := toml.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	if got := raw.Tool.Volboot.Requirements["g"]; len(got) != 1 || got[0] != `a; b == "c\"d"` {
		t.Errorf("requirements back: %q", got)
	}
}

func art(a *Artifact) string {
	if a == nil {
		return "-"
	}
	return fmt.Sprintf("%+v", *a)
}

func arts(as []Artifact) string {
	var s []string
	for i := range as {
		s = append(s, art(&as[i]))
	}
	return strings.Join(s, ";")
}

// packagesOnly is the [[packages]] part of an encoded document.
func packagesOnly(data []byte) string {
	s := string(data)
	i := strings.Index(s, "\n[[packages]]")
	if i < 0 {
		return ""
	}
	s = s[i:]
	if j := strings.Index(s, "\n[tool.volboot]"); j >= 0 {
		s = s[:j]
	}
	return s
}

func FuzzParseUVLock(f *testing.F) {
	f.Add([]byte(uvOutput))
	f.Add([]byte("lock-version = \"1.0\"\n[[packages]]\nname = \"a\"\nversion = \"1\"\nwheels = [{ url = \"https://h/a-1-py3-none-any.whl\", size = 1, hashes = { sha256 = \"" + strings.Repeat("ab", 32) + "\" } }]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pkgs, err := ParseUVLock("f", data)
		if err != nil {
			return
		}
		for _, p := range pkgs {
			for _, a := range append(append([]Artifact{}, p.Wheels...), deref(p.Sdist)...) {
				if a.URL == "" || a.Size < 0 || len(a.SHA256) != 64 {
					t.Fatalf("accepted an artifact without url, size and sha256: %+v", a)
				}
			}
		}
		checkRoundTrip(t, pkgs, string(data))
	})
}

func deref(a *Artifact) []Artifact {
	if a == nil {
		return nil
	}
	return []Artifact{*a}
}

func FuzzDiagnoseUV(f *testing.F) {
	f.Add(uvDNSFailure)
	f.Add("error: Failed to fetch: `http://[::1]:80/x`")
	f.Fuzz(func(t *testing.T, s string) {
		d := DiagnoseUV(s)
		if d.URL != "" && (!d.Network || !(strings.HasPrefix(d.URL, "https://") || strings.HasPrefix(d.URL, "http://"))) {
			t.Fatalf("%+v", d)
		}
	})
}

// The combined marker holds for a group exactly when the group claims the
// package and uv's marker holds.
func FuzzCombineMarker(f *testing.F) {
	f.Add("platform_machine == 'x86_64' or sys_platform == 'darwin'", "", uint8(5))
	f.Add("python_full_version < '3.14'", "implementation_name != 'PyPy'", uint8(3))
	f.Fuzz(func(t *testing.T, env1, env2 string, mask uint8) {
		envs := []string{env1, env2}
		for _, e := range envs {
			if e == "" {
				continue
			}
			if _, err := pep508.ParseMarker(e); err != nil {
				return
			}
		}
		groups := []string{"a", "b-c", "d", "e"}
		var terms []markerTerm
		for i, g := range groups {
			if mask&(1<<i) != 0 {
				terms = append(terms, markerTerm{group: g, env: envs[int(mask>>4)&1^i&1]})
			}
		}
		if len(terms) == 0 {
			return
		}
		m, err := pep508.ParseMarker(combineMarker(terms))
		if err != nil {
			t.Fatalf("%q: %v", combineMarker(terms), err)
		}
		values := map[string]string{"os_name": "posix", "sys_platform": "linux", "platform_machine": "x86_64", "platform_python_implementation": "CPython",
			"platform_release": "", "platform_system": "Linux", "platform_version": "", "python_version": "3.11", "python_full_version": "3.11.0",
			"implementation_name": "cpython", "implementation_version": "3.11.0"}
		for _, g := range groups {
			env := pep508.Environment{Values: values, DependencyGroups: []string{g}}
			want := false
			for _, tm := range terms {
				if tm.group != g {
					continue
				}
				em, _ := pep508.ParseMarker(tm.env)
				if tm.env == "" {
					em = nil
				}
				ok, err := em.Evaluate(env)
				if err != nil {
					return
				}
				want = ok
			}
			got, err := m.Evaluate(env)
			if err != nil {
				return
			}
			if got != want {
				t.Fatalf("%q for group %s: %v, want %v", combineMarker(terms), g, got, want)
			}
		}
	})
}

func TestPEP751Name(t *testing.T) {
	for name, want := range map[string]bool{
		"pylock.toml": true, "pylock.f5-tts.toml": true, "pylock.a.b.toml": false, "pylock..toml": false,
		"f5-tts.pylock.toml": false, "pylock.toml.bak": false, "lock.toml": false,
	} {
		if PEP751Name(name) != want {
			t.Errorf("PEP751Name(%q) = %v", name, !want)
		}
	}
}
