package models

import (
	"errors"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

func TestMatchPattern(t *testing.T) {
	cases := []struct {
		pat, name string
		want      bool
	}{
		{"*.json", "config.json", true},
		{"*.json", "sub/config.json", false}, // '*' does not cross '/'
		{"**/*.json", "config.json", true},
		{"**/*.json", "a/b/config.json", true},
		{"onnx/**", "onnx/model.onnx", true},
		{"onnx/**", "onnx/a/b/c", true},
		{"onnx/**", "onnx", true}, // "**" may match nothing
		{"onnx/", "onnx/a/b", true},
		{"onnx/", "onnxx/a", false},
		{"a/**/b", "a/b", true},
		{"a/**/b", "a/x/y/b", true},
		{"a/**/b", "a/x/y/c", false},
		{"vocabulary.*", "vocabulary.txt", true},
		{"model-?????-of-00002.safetensors", "model-00001-of-00002.safetensors", true},
		{"[ab].bin", "c.bin", false},
		{`\*.bin`, "*.bin", true},
		{"F5TTS_v1_Base/model_1250000.safetensors", "F5TTS_v1_Base/model_1250000.safetensors", true},
	}
	for _, c := range cases {
		got, err := MatchPattern(c.pat, c.name)
		if err != nil || got != c.want {
			t.Errorf("MatchPattern(%q, %q) = %v, %v; want %v", c.pat, c.name, got, err, c.want)
		}
	}
	if _, err := MatchPattern("a/[b", "a/b"); !errors.Is(err, path.ErrBadPattern) {
		t.Errorf("bad pattern: %v", err)
	}
	// Many "**" segments stay cheap (the matcher is O(pattern x name)).
	long := strings.Repeat("**/", 200) + "x"
	if ok, _ := MatchPattern(long, strings.Repeat("a/", 200)+"y"); ok {
		t.Error("long pattern matched")
	}
}

func TestNamesAndTargets(t *testing.T) {
	if got := RepoDirName("model", "SWivid/F5-TTS"); got != "models--SWivid--F5-TTS" {
		t.Error(got)
	}
	if got := RepoDirName("dataset", "gpt2"); got != "datasets--gpt2" {
		t.Error(got)
	}
	if got := blobTarget("a/b/c.bin", "e"); got != "../../../../blobs/e" {
		t.Error(got)
	}
	for in, want := range map[string]string{`"abc"`: "abc", `W/"abc"`: "abc", ` "x-1" `: "x-1", "plain": "plain"} {
		if got := NormalizeETag(in); got != want {
			t.Errorf("NormalizeETag(%q) = %q", in, got)
		}
	}
	if got := pathEscape("refs/pr/1"); got != "refs%2Fpr%2F1" {
		t.Error(got)
	}
	if got := escapePath("dir/a b+c.txt"); got != "dir/a%20b%2Bc.txt" {
		t.Error(got)
	}
	for _, bad := range []string{"", "/a", "a//b", "a/../b", "./a", `a\b`, "a/"} {
		if checkRepoPath(bad) == nil {
			t.Errorf("checkRepoPath(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "a/b/c", "a--b/c", "a/.hidden", "-a/b", "a/b c", "../a"} {
		if checkRepoID(bad) == nil {
			t.Errorf("checkRepoID(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "a.b", "a/b", "..", strings.Repeat("a", 129)} {
		if checkETag(bad) == nil {
			t.Errorf("checkETag(%q) accepted", bad)
		}
	}
}

func TestWriteLinkReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	lp := filepath.Join(dir, "x")
	for _, tgt := range []string{"../../blobs/a", "../../blobs/a", "../../blobs/b"} {
		if _, err := writeLink(lp, tgt); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.Readlink(lp); got != tgt {
			t.Fatalf("link = %q, want %q", got, tgt)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left temporary names: %v", ents)
	}
}

func TestParseRevisionInfo(t *testing.T) {
	ok := `{"id":"o/m","sha":"` + strings.Repeat("a", 40) + `","siblings":[{"rfilename":"a/b.bin"}]}`
	ri, err := ParseRevisionInfo([]byte(ok))
	if err != nil || len(ri.Siblings) != 1 || ri.Siblings[0].RFilename != "a/b.bin" {
		t.Fatalf("%+v, %v", ri, err)
	}
	for _, bad := range []string{`{"sha":"main"}`, `{"sha":"` + strings.Repeat("a", 40) + `","siblings":[{"rfilename":"../x"}]}`, `[`} {
		if _, err := ParseRevisionInfo([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// inside reports whether joining p under base stays strictly inside it.
func inside(base, p string) bool {
	j := filepath.Join(base, filepath.FromSlash(p))
	return strings.HasPrefix(j, base+string(filepath.Separator))
}

func FuzzCheckRepoPath(f *testing.F) {
	for _, s := range []string{"a", "a/b.bin", "../a", "a/../../b", "/etc/passwd", "a//b", ".", "a/./b", "a\\b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if checkRepoPath(p) != nil {
			return
		}
		base := "/hub/models--o--m/snapshots/c"
		if !inside(base, p) || path.Clean(p) != p {
			t.Fatalf("accepted %q, which leaves or is not clean under the snapshot", p)
		}
		if strings.Count(blobTarget(p, "e"), "../") != 2+strings.Count(p, "/") {
			t.Fatal("target depth")
		}
		// The relative target really reaches blobs/ from the link.
		link := path.Join("/r/snapshots/c", p)
		if got := path.Join(path.Dir(link), blobTarget(p, "e")); got != "/r/blobs/e" {
			t.Fatalf("%q: target resolves to %q", p, got)
		}
	})
}

func FuzzETag(f *testing.F) {
	for _, s := range []string{`"abc"`, `W/"` + strings.Repeat("0", 64) + `"`, `"../x"`, `"a.part"`, `""`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		e := NormalizeETag(h)
		if checkETag(e) != nil {
			return
		}
		if strings.ContainsAny(e, "./\\\x00") || e == "" {
			t.Fatalf("accepted blob name %q", e)
		}
	})
}

func FuzzMatchPattern(f *testing.F) {
	f.Add("**/*.json", "a/b.json")
	f.Add("a/[b", "a/b")
	f.Add("onnx/", "onnx/x")
	f.Add(`\`, `\`)
	f.Fuzz(func(t *testing.T, pat, name string) {
		got, err := MatchPattern(pat, name)
		if err != nil {
			return
		}
		// Without "**" and a trailing '/', it is path.Match segment-wise.
		if !strings.Contains(pat, "**") && !strings.HasSuffix(pat, "/") && !strings.Contains(pat, "/") && !strings.Contains(name, "/") {
			want, _ := path.Match(pat, name)
			if got != want {
				t.Fatalf("MatchPattern(%q, %q) = %v, path.Match says %v", pat, name, got, want)
			}
		}
	})
}

func FuzzParseRevisionInfo(f *testing.F) {
	f.Add([]byte(`{"sha":"` + strings.Repeat("a", 40) + `","siblings":[{"rfilename":"a/b.bin"}]}`))
	f.Add([]byte(`{"sha":"x","siblings":[{"rfilename":"/etc"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ri, err := ParseRevisionInfo(b)
		if err != nil {
			return
		}
		if !IsCommit(ri.SHA) {
			t.Fatalf("sha %q", ri.SHA)
		}
		for _, s := range ri.Siblings {
			if !inside("/snap", s.RFilename) {
				t.Fatalf("sibling %q leaves the snapshot", s.RFilename)
			}
		}
	})
}

func FuzzRepoIDAndRevision(f *testing.F) {
	f.Add("SWivid/F5-TTS", "main")
	f.Add("gpt2", "refs/pr/1")
	f.Add("a--b/c", "../x")
	f.Add("a-/-b", "v1.0")
	f.Fuzz(func(t *testing.T, id, rev string) {
		if checkRepoID(id) == nil {
			name := RepoDirName("model", id)
			back := strings.ReplaceAll(strings.TrimPrefix(name, "models--"), "--", "/")
			if back != id || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
				t.Fatalf("repo %q: folder %q does not map back (%q)", id, name, back)
			}
		}
		if checkRevision(rev) == nil {
			if !inside("/repo/refs", rev) {
				t.Fatalf("revision %q leaves refs/", rev)
			}
			e := pathEscape(rev)
			if back, err := url.PathUnescape(e); err != nil || back != rev || strings.ContainsAny(e, "/?# ") {
				t.Fatalf("revision %q escaped to %q (back %q, %v)", rev, e, back, err)
			}
		}
	})
}
