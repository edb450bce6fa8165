package venv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMergeInto: the fallback of a generation's replacement where the
// filesystem cannot exchange directories: dst ends with src's content,
// files already the same stay the same inode, wrong kinds are replaced,
// and nothing of dst that src also has goes missing on the way.
func TestMergeInto(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	write := func(root, rel, data string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(src, "a.py", "new a")
	write(dst, "a.py", "damaged a")
	write(src, "pkg/b.py", "b") // dst lacks pkg entirely
	write(src, "c.py", "c")
	if err := os.MkdirAll(filepath.Join(dst, "c.py", "junk"), 0o755); err != nil { // a directory where a file belongs
		t.Fatal(err)
	}
	write(dst, "same.py", "same")
	if err := os.Link(filepath.Join(dst, "same.py"), filepath.Join(src, "same.py")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.py", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	write(dst, "extra.txt", "not in src")
	before, _ := os.Lstat(filepath.Join(dst, "same.py"))
	if err := mergeInto(src, dst); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]string{"a.py": "new a", "pkg/b.py": "b", "c.py": "c", "same.py": "same", "extra.txt": "not in src", "link": "new a"} {
		got, err := os.ReadFile(filepath.Join(dst, rel))
		if err != nil || string(got) != want {
			t.Errorf("%s after the merge: %q, %v; want %q", rel, got, err, want)
		}
	}
	after, _ := os.Lstat(filepath.Join(dst, "same.py"))
	if !os.SameFile(before, after) {
		t.Error("a file already the same was replaced")
	}
}
