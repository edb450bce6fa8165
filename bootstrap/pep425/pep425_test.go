package pep425

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseTags(t *testing.T) {
	for in, want := range map[string][]string{
		"py2.py3-none-any": {"py2-none-any", "py3-none-any"},
		"cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64": {
			"cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"},
		"PY3-NONE-ANY":          {"py3-none-any"},
		"py3.py3-none-any":      {"py3-none-any"},
		"cp38.cp39-abi3.none-x": {"cp38-abi3-x", "cp38-none-x", "cp39-abi3-x", "cp39-none-x"},
	} {
		tags, err := ParseTags(in)
		if err != nil {
			t.Errorf("ParseTags(%q): %v", in, err)
			continue
		}
		var got []string
		for _, tag := range tags {
			got = append(got, tag.String())
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseTags(%q) = %v, want %v", in, got, want)
		}
	}
	for _, in := range []string{"py3-none", "py3..py2-none-any", "py3-none-any-x", "py3-no ne-any", "-none-any"} {
		if _, err := ParseTags(in); err == nil {
			t.Errorf("ParseTags(%q) succeeded", in)
		}
	}
}

func TestParseWheelFilename(t *testing.T) {
	w, err := ParseWheelFilename("Flash_Attn-2.8.3+cu12torch2.8cxx11abiTRUE-12b-cp311-cp311-linux_x86_64.whl")
	if err != nil {
		t.Fatal(err)
	}
	if w.Distribution != "Flash_Attn" || w.NormalizedName() != "flash-attn" || w.Version != "2.8.3+cu12torch2.8cxx11abiTRUE" ||
		w.Build != "12b" || len(w.Tags) != 1 || w.Tags[0] != (Tag{"cp311", "cp311", "linux_x86_64"}) {
		t.Errorf("parsed %+v", w)
	}
	if n, rest := w.BuildNumber(); n != "12" || rest != "b" {
		t.Errorf("BuildNumber = %q %q", n, rest)
	}
	if got := w.ParsedVersion().String(); got != "2.8.3+cu12torch2.8cxx11abitrue" {
		t.Errorf("ParsedVersion = %q", got)
	}
	for _, c := range []struct{ name, want string }{
		{"foo-1.0-py3-none-any.tar.gz", "does not end in .whl"},
		{"foo-1.0-x1-py3-none-any.whl", "must start with a digit"},
		{"foo__bar-1.0-py3-none-any.whl", "escaped project name"},
		{"foo-bar-1.0-py3-none-any.whl", "invalid version"},
		{"dir/foo-1.0-py3-none-any.whl", "base name"},
		{"foo-1.0-py3-none.whl", "4 or 5 dashes"},
		{"foo-1.0-py3-none-any!.whl", "component"},
	} {
		_, err := ParseWheelFilename(c.name)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("ParseWheelFilename(%q) error %v; want it to name the file and say %q", c.name, err, c.want)
		}
	}
}

func TestRanking(t *testing.T) {
	in := Interpreter{Implementation: "cpython", Major: 3, Minor: 11, ABI: "cp311", Platform: "linux_x86_64", Libc: "glibc", LibcMajor: 2, LibcMinor: 17}
	r := NewRanking(CompatibleTags(in))
	rank := func(name string) (int, bool) {
		w, err := ParseWheelFilename(name)
		if err != nil {
			t.Fatal(err)
		}
		return r.Rank(w.Tags)
	}
	native, ok1 := rank("x-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
	legacy, ok2 := rank("x-1-cp311-cp311-manylinux2014_x86_64.whl")
	abi3, ok3 := rank("x-1-cp38-abi3-manylinux1_x86_64.whl")
	pure, ok4 := rank("x-1-py3-none-any.whl")
	if !(ok1 && ok2 && ok3 && ok4) || !(native < legacy && legacy < abi3 && abi3 < pure) {
		t.Errorf("ranks %d %d %d %d (%v %v %v %v)", native, legacy, abi3, pure, ok1, ok2, ok3, ok4)
	}
	if _, ok := rank("x-1-cp311-cp311-manylinux_2_28_x86_64.whl"); ok {
		t.Error("a wheel for a newer glibc ranked as supported")
	}
	if _, ok := (Ranking{}).Rank([]Tag{{"py3", "none", "any"}}); ok {
		t.Error("the zero Ranking supports nothing")
	}
}

func TestCompatibleTagsSpecialCases(t *testing.T) {
	ft := CompatibleTags(Interpreter{Implementation: "cpython", Major: 3, Minor: 13, ABI: "cp313t", Platform: "linux_x86_64", Libc: "glibc", LibcMajor: 2, LibcMinor: 28})
	for _, tag := range ft {
		if tag.ABI == "abi3" {
			t.Fatalf("free-threaded interpreter got %v", tag)
		}
	}
	if ft[0] != (Tag{"cp313", "cp313t", "manylinux_2_28_x86_64"}) {
		t.Errorf("first tag %v", ft[0])
	}
	unknown := CompatibleTags(Interpreter{Implementation: "cpython", Major: 3, Minor: 11, ABI: "cp311", Platform: "linux_x86_64"})
	if unknown[0] != (Tag{"cp311", "cp311", "linux_x86_64"}) {
		t.Errorf("unknown libc: first tag %v", unknown[0])
	}
	last := unknown[len(unknown)-1]
	if last != (Tag{"py30", "none", "any"}) {
		t.Errorf("last tag %v", last)
	}
	var plats []string
	for _, tag := range CompatibleTags(Interpreter{Implementation: "cpython", Major: 3, Minor: 11, ABI: "cp311", Platform: "linux_x86_64", Libc: "glibc", LibcMajor: 2, LibcMinor: 17}) {
		if tag.Interpreter == "cp311" && tag.ABI == "cp311" {
			plats = append(plats, tag.Platform)
		}
	}
	if plats[0] != "manylinux_2_17_x86_64" || plats[1] != "manylinux2014_x86_64" || plats[len(plats)-1] != "linux_x86_64" ||
		!contains(plats, "manylinux2010_x86_64") || !contains(plats, "manylinux1_x86_64") || contains(plats, "manylinux_2_4_x86_64") {
		t.Errorf("platforms %v", plats)
	}
}
