package pep440

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseNormalizes(t *testing.T) {
	for in, want := range map[string]string{
		"1.0.0-RC1":                   "1.0.0rc1",
		"v1.0":                        "1.0",
		"1.0_post2":                   "1.0.post2",
		"1.0-1":                       "1.0.post1",
		"2.8.0+CU128":                 "2.8.0+cu128",
		"1!01.02":                     "1!1.2",
		"0!1.0":                       "1.0",
		"1.0+ubuntu-1_2":              "1.0+ubuntu.1.2",
		"1.0.99999999999999999999999": "1.0.99999999999999999999999",
	} {
		v, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if v.String() != want {
			t.Errorf("Parse(%q) = %q, want %q", in, v, want)
		}
	}
}

func TestParseErrorNamesInput(t *testing.T) {
	for _, in := range []string{"", "1.0+", "french toast", "1.0\u00a0", "1.0+\u212a"} {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", in)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("Parse(%q) error %q does not name the input", in, err)
		}
	}
}

func TestCompareBigNumbers(t *testing.T) {
	a := MustParse("1.0.99999999999999999999999")
	b := MustParse("1.0.9999999999999999999999")
	if a.Compare(b) != 1 || b.Compare(a) != -1 {
		t.Errorf("big release numbers compare wrongly")
	}
	if MustParse("1.0").Compare(MustParse("1.0.0.0")) != 0 {
		t.Errorf("trailing zeros must not matter")
	}
}

func TestPredicates(t *testing.T) {
	if !MustParse("1.0.dev1").IsPrerelease() || !MustParse("1.0rc1").IsPrerelease() || MustParse("1.0.post1").IsPrerelease() {
		t.Error("IsPrerelease")
	}
	if got := MustParse("2.8.0+cu128").Public().String(); got != "2.8.0" {
		t.Errorf("Public = %q", got)
	}
	if got := MustParse("1!2.0rc1.post3+x").BaseString(); got != "1!2.0" {
		t.Errorf("BaseString = %q", got)
	}
}

// packaging 22+ pads the candidate before cutting it to the prefix length;
// 21.3 (the oracle) does not, so these are checked by hand.
func TestWildcardPadsBeforeCutting(t *testing.T) {
	set := MustParseSpecifiers("==1.0.0.*")
	if !set.ContainsPrereleases(MustParse("1.0a1"), true) {
		t.Error("==1.0.0.* should admit 1.0a1 (a pre-release of 1.0.0)")
	}
	if set.ContainsPrereleases(MustParse("1.1a1"), true) {
		t.Error("==1.0.0.* admitted 1.1a1")
	}
	// Normalized comparison of the spec: "==1.0RC1.*" is "==1.0rc1.*".
	if !MustParseSpecifiers("==1.0RC1.*").Contains(MustParse("1.0rc1")) {
		t.Error("==1.0RC1.* should admit 1.0rc1")
	}
	if !MustParseSpecifiers("==1!2.*").Contains(MustParse("1!2.5")) || MustParseSpecifiers("==1!2.*").Contains(MustParse("2.5")) {
		t.Error("epoch wildcard")
	}
}

func TestSpecifierSetBasics(t *testing.T) {
	s := MustParseSpecifiers(" <2 , >=1.0,,>=1.0 ")
	if got := s.String(); got != "<2,>=1.0" {
		t.Errorf("String = %q", got)
	}
	if s.IsEmpty() || !(Specifiers{}).IsEmpty() {
		t.Error("IsEmpty")
	}
	if !(Specifiers{}).Contains(MustParse("1.0")) || (Specifiers{}).Contains(MustParse("1.0a1")) {
		t.Error("the empty set admits finals, not pre-releases")
	}
	if v, ok := MustParseSpecifiers("== 2.8.0").Exact(); !ok || v.String() != "2.8.0" {
		t.Errorf("Exact = %v %v", v, ok)
	}
	for _, in := range []string{"==2.*", ">=2.8.0", "==1,==2", ""} {
		if _, ok := MustParseSpecifiers(in).Exact(); ok {
			t.Errorf("Exact(%q) = true", in)
		}
	}
}

func TestSpecifierErrors(t *testing.T) {
	for _, in := range []string{"===", "1.0", ">=1.0+local", "~=1", "<=1.*", ">=1.0,foo", "==1.0 .*", "~=1.0.*"} {
		_, err := ParseSpecifiers(in)
		if err == nil {
			t.Errorf("ParseSpecifiers(%q) succeeded", in)
		} else if !strings.Contains(err.Error(), in) {
			t.Errorf("ParseSpecifiers(%q) error %q does not name the input", in, err)
		}
	}
}
