package pep425

import (
	"reflect"
	"testing"
)

func FuzzParseWheelFilename(f *testing.F) {
	for _, s := range []string{
		"numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
		"six-1.16.0-py2.py3-none-any.whl", "foo_bar-1.0-2abc-py3-none-any.whl",
		"torch-2.8.0+cu128-cp311-cp311-manylinux_2_28_x86_64.whl",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWheelFilename(s)
		if err != nil {
			return
		}
		again, err := ParseWheelFilename(w.String())
		if err != nil {
			t.Fatalf("String() of %q = %q does not re-parse: %v", s, w.String(), err)
		}
		if !reflect.DeepEqual(again, w) {
			t.Fatalf("round trip of %q: %+v then %+v", s, w, again)
		}
		if len(w.Tags) == 0 {
			t.Fatalf("%q parsed with no tags", s)
		}
		r := NewRanking(w.Tags)
		if rank, ok := r.Rank(w.Tags); !ok || rank != 0 {
			t.Fatalf("a wheel's own tags rank %d, %v", rank, ok)
		}
	})
}
