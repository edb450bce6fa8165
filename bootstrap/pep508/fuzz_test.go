package pep508

import (
	"reflect"
	"testing"
)

func FuzzParseRequirement(f *testing.F) {
	for _, s := range []string{
		"requests[security,socks]>=2.8.1,==2.8.*; python_version < '2.7'",
		"name @ https://example.com/x.whl ; extra == 'a'", "name (>=1.0)", "a.b-c_d[x]~=1.0",
		"name; 'asr' in dependency_groups or (os_name == 'nt' and python_version < '3')",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRequirement(s)
		if err != nil {
			return
		}
		again, err := ParseRequirement(r.String())
		if err != nil {
			t.Fatalf("String() of %q = %q does not re-parse: %v", s, r.String(), err)
		}
		if again.String() != r.String() || again.Name != r.Name || !reflect.DeepEqual(again.Extras, r.Extras) ||
			again.URL != r.URL || again.Specifier.String() != r.Specifier.String() || again.Marker.String() != r.Marker.String() {
			t.Fatalf("round trip of %q: %q then %q", s, r.String(), again.String())
		}
		if !ValidName(r.Name) {
			t.Fatalf("accepted invalid name %q", r.Name)
		}
	})
}

func FuzzParseMarker(f *testing.F) {
	for _, s := range []string{
		`python_version >= "3.11" and 'asr' in dependency_groups`, `(os_name == 'nt' or extra == "x") and "lin" in sys_platform`,
		`python_full_version ~= '3.11.0'`, `platform_release === "6.1"`, `'x' not in extras`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMarker(s)
		if err != nil {
			return
		}
		again, err := ParseMarker(m.String())
		if err != nil {
			t.Fatalf("String() of %q = %q does not re-parse: %v", s, m, err)
		}
		if again.String() != m.String() {
			t.Fatalf("round trip of %q: %q then %q", s, m, again)
		}
		got1, err1 := m.Evaluate(env)
		got2, err2 := again.Evaluate(env)
		if got1 != got2 || (err1 == nil) != (err2 == nil) {
			t.Fatalf("%q and %q evaluate differently: %v %v / %v %v", s, again, got1, err1, got2, err2)
		}
	})
}
