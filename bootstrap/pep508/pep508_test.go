package pep508

import (
	"reflect"
	"strings"
	"testing"
)

func TestNormalizeAndValidName(t *testing.T) {
	for in, want := range map[string]string{
		"Foo_Bar.baz": "foo-bar-baz", "torch": "torch", "A--_.B": "a-b", "flash_attn": "flash-attn",
	} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]bool{
		"a": true, "A1": true, "a.b-c_d": true, "": false, "-a": false, "a-": false, "a b": false, "ä": false, "a..b": true,
	} {
		if got := ValidName(in); got != want {
			t.Errorf("ValidName(%q) = %v", in, got)
		}
	}
}

var env = Environment{Values: map[string]string{
	"implementation_name": "cpython", "implementation_version": "3.11.7", "os_name": "posix",
	"platform_machine": "x86_64", "platform_release": "6.1.0-18-amd64", "platform_system": "Linux",
	"platform_version": "#1 SMP", "python_full_version": "3.11.7",
	"platform_python_implementation": "CPython", "python_version": "3.11", "sys_platform": "linux",
}, Extras: []string{"CUDA_12"}, DependencyGroups: []string{"asr", "Flash.Attn"}}

func withValue(k, v string) Environment {
	e := env
	e.Values = map[string]string{}
	for key, val := range env.Values {
		e.Values[key] = val
	}
	e.Values[k] = v
	return e
}

// Cases packaging 21.3 cannot answer (PEP 751 sets, PEP 685 extras, the
// choices listed in the package comment), checked by hand.
func TestEvaluateBeyondTheOracle(t *testing.T) {
	for _, c := range []struct {
		marker string
		env    Environment
		want   bool
	}{
		{`'asr' in dependency_groups`, env, true},
		{`"flash-attn" in dependency_groups`, env, true},
		{`'tts' in dependency_groups`, env, false},
		{`'tts' not in dependency_groups`, env, true},
		{`'cuda-12' in extras`, env, true},
		{`'cuda' in extras`, env, false},
		{`'x' in extras`, Environment{Values: env.Values}, false},
		{`extra == "Foo_Bar"`, withValue("extra", "foo-bar"), true},
		{`extra == "gpu"`, env, false},
		{`extra != "gpu"`, env, true},
		{`python_full_version >= "3.8"`, withValue("python_full_version", "3.13.0rc1"), true},
		{`platform_release >= "5"`, env, true},
		{`platform_release < "10"`, env, false},
		{`python_version == python_version`, env, true},
		{`"a" == "a"`, env, true},
		{`'asr' in dependency_groups and python_version >= "3.11"`, env, true},
		{`('tts' in dependency_groups or 'asr' in dependency_groups) and extra == ""`, env, true},
	} {
		m, err := ParseMarker(c.marker)
		if err != nil {
			t.Errorf("ParseMarker(%q): %v", c.marker, err)
			continue
		}
		got, err := m.Evaluate(c.env)
		if err != nil || got != c.want {
			t.Errorf("%s: got %v, %v; want %v", c.marker, got, err, c.want)
		}
	}
}

func TestEvaluateErrors(t *testing.T) {
	for _, c := range []struct{ marker, want string }{
		{`extras == 'a'`, "can only appear on the right"},
		{`'a' < extras`, "only 'in' and 'not in' apply"},
		{`dependency_groups in 'a'`, "can only appear on the right"},
		{`os_name ~= "posix"`, "cannot compare"},
		{`python_version >= "3" or os_name == "nt"`, ""},
	} {
		m := MustParseMarker(c.marker)
		e := env
		if c.want == "" {
			e = Environment{Values: map[string]string{"os_name": "posix"}}
			c.want = "python_version is not set"
		}
		_, err := m.Evaluate(e)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.marker, err, c.want)
		}
	}
	var nilMarker *Marker
	if ok, err := nilMarker.Evaluate(Environment{}); !ok || err != nil || nilMarker.String() != "" {
		t.Error("a nil marker holds and prints empty")
	}
}

func TestMarkerString(t *testing.T) {
	for in, want := range map[string]string{
		`os.name=='posix'`:      `os_name == "posix"`,
		`a_is_not_a_var == 'x'`: "",
		`(python_version<'3' or os_name=="nt") and extra=='x'`:   `(python_version < "3" or os_name == "nt") and extra == "x"`,
		`python_version<'3' or (os_name=="nt" and (extra=='x'))`: `python_version < "3" or os_name == "nt" and extra == "x"`,
		`((a_b))`:               "",
		`os_name == 'say "hi"'`: `os_name == 'say "hi"'`,
		`'x' not   in extras`:   `"x" not in extras`,
	} {
		m, err := ParseMarker(in)
		if want == "" {
			if err == nil {
				t.Errorf("ParseMarker(%q) succeeded", in)
			}
			continue
		}
		if err != nil || m.String() != want {
			t.Errorf("ParseMarker(%q) = %v, %v; want %q", in, m, err, want)
		}
	}
}

func TestErrorsNameColumn(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"name >= 1.0 ;os_name == 'a' and", "column 32: expected a marker variable"},
		{"name[a b]", "column 8: expected ',' or ']'"},
		{"name; os_name = 'a'", "column 15: expected a comparison operator"},
		{"name; (os_name == 'a'", "column 22: expected ')'"},
		{"name; os_name == 'a", "column 18: expected a closing '"},
		{"name @ https://x/a.whl extra", "column 24: expected ';'"},
		{"name >=1.0 <2", "column 6: "},
		{"-name", "column 1: expected a project name"},
		{"name @ notaurl", "column 8: invalid URL"},
	} {
		_, err := ParseRequirement(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.in) {
			t.Errorf("ParseRequirement(%q) error %v; want it to name the input and %q", c.in, err, c.want)
		}
	}
}

func TestRequirementFields(t *testing.T) {
	r := MustParseRequirement(`Torch_Audio [Cuda, extra_2,cuda] (>=2.8 , <2.9) ; python_version >= "3.11"`)
	if r.Name != "Torch_Audio" || r.NormalizedName() != "torch-audio" ||
		!reflect.DeepEqual(r.Extras, []string{"cuda", "extra-2"}) ||
		r.Specifier.String() != "<2.9,>=2.8" || r.URL != "" || r.Marker.String() != `python_version >= "3.11"` {
		t.Errorf("fields: %+v", r)
	}
	if got := r.String(); got != `Torch_Audio[cuda,extra-2]<2.9,>=2.8; python_version >= "3.11"` {
		t.Errorf("String = %q", got)
	}
	u := MustParseRequirement("pkg @ https://h/pkg-1.0-py3-none-any.whl;x ; os_name == 'posix'")
	if u.URL != "https://h/pkg-1.0-py3-none-any.whl;x" || u.Marker == nil {
		t.Errorf("url requirement: %+v", u)
	}
	if got := u.String(); got != `pkg @ https://h/pkg-1.0-py3-none-any.whl;x ; os_name == "posix"` {
		t.Errorf("String = %q", got)
	}
}
