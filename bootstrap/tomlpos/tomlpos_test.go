package tomlpos

import (
	"strings"
	"testing"
)

const doc = `name = "x"   # line 1
[python]
requires = ">=3.11"
[[group]]
name = "a"
requirements = [
  "torch==2.8.0",
  "numpy",
]
[[group]]
name = "b"
when = { cuda = ">=12.8",
  compute-capability = ">=8.0" }
[group.extra]
k = 1
[run]
env = { A = "1" }
`

func TestLines(t *testing.T) {
	ix, err := Build("m.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{
		"name":                             1,
		"python.requires":                  3,
		"group[0]":                         4,
		"group[0].name":                    5,
		"group[0].requirements[0]":         7,
		"group[0].requirements[1]":         8,
		"group[1].name":                    11,
		"group[1].when.cuda":               12,
		"group[1].when.compute-capability": 13,
		"group[1].extra.k":                 15,
		"run.env.A":                        17,
		"group[1].requirements[4]":         10, // falls back to the entry
		"nothing.here":                     0,
	} {
		if got := ix.Line(path); got != want {
			t.Errorf("Line(%q) = %d, want %d", path, got, want)
		}
	}
	if w := ix.Where("python.requires"); w != "m.toml:3" {
		t.Errorf("Where = %q", w)
	}
}

func TestSyntaxErrorNamesLine(t *testing.T) {
	_, err := Build("bad.toml", []byte("a = 1\nb = = 2\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "bad.toml:2:") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzBuild(f *testing.F) {
	f.Add([]byte(doc))
	f.Add([]byte("[[a]]\n[a.b]\nc=[1,[2,{d=3}]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := Build("f.toml", data)
		if err == nil {
			_ = ix.Line("a.b[0].c")
		}
	})
}
