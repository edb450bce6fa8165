package pep440

import "testing"

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"1.0", "1!2.0rc1.post2.dev3+local.7", "v1.0-1", "1.0_post2", "1.0.0-RC1", "2.8.0+cu128", "0.9999999999999999999999"} {
		f.Add(s, "1.0", "1.0.post1")
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		va, errA := Parse(a)
		if errA == nil {
			again, err := Parse(va.String())
			if err != nil {
				t.Fatalf("String() of %q = %q does not re-parse: %v", a, va, err)
			}
			if again.String() != va.String() || again.Compare(va) != 0 {
				t.Fatalf("round trip of %q: %q then %q", a, va, again)
			}
			if va.Compare(va) != 0 {
				t.Fatalf("%q does not equal itself", a)
			}
		}
		vb, errB := Parse(b)
		if errA == nil && errB == nil {
			if ab, ba := va.Compare(vb), vb.Compare(va); ab != -ba {
				t.Fatalf("Compare not antisymmetric: %q vs %q: %d, %d", a, b, ab, ba)
			}
			if (va.String() == vb.String()) && va.Compare(vb) != 0 {
				t.Fatalf("equal strings compare unequal: %q %q", a, b)
			}
			if vc, err := Parse(c); err == nil && va.Compare(vb) <= 0 && vb.Compare(vc) <= 0 && va.Compare(vc) > 0 {
				t.Fatalf("Compare not transitive: %q <= %q <= %q but %q > %q", a, b, c, a, c)
			}
		}
	})
}

func FuzzParseSpecifiers(f *testing.F) {
	for _, s := range []string{">=1.0,<2", "~=2.2.post3", "==1.0.*", "!=1.0+local", "===foo", "", "== 1.0 , >v1"} {
		f.Add(s, "1.0")
	}
	f.Fuzz(func(t *testing.T, s, v string) {
		set, err := ParseSpecifiers(s)
		if err != nil {
			return
		}
		again, err := ParseSpecifiers(set.String())
		if err != nil {
			t.Fatalf("String() of %q = %q does not re-parse: %v", s, set, err)
		}
		if again.String() != set.String() {
			t.Fatalf("round trip of %q: %q then %q", s, set, again)
		}
		if ver, err := Parse(v); err == nil {
			for _, pre := range []bool{false, true} {
				if set.ContainsPrereleases(ver, pre) != again.ContainsPrereleases(ver, pre) {
					t.Fatalf("%q and its round trip %q disagree on %q", s, again, v)
				}
			}
			if set.Contains(ver) && ver.IsPrerelease() && !set.Prereleases() {
				t.Fatalf("%q admitted pre-release %q by default", s, v)
			}
		}
	})
}
