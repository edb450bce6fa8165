package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAndParseTempName(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := Write(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "two" {
		t.Fatalf("read back %q, %v", b, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("leftover temporary files: %v", ents)
	}
	tmp := filepath.Base(TempName(p))
	info, ok := ParseTempName(tmp)
	if !ok || info.Final != "state.json" || info.PID != os.Getpid() {
		t.Fatalf("ParseTempName(%q) = %+v, %v", tmp, info, ok)
	}
	for _, bad := range []string{"state.json", ".state.json", ".x.vbtmp.h.notapid.r", "x.vbtmp.h.1.r"} {
		if _, ok := ParseTempName(bad); ok {
			t.Errorf("ParseTempName(%q) accepted", bad)
		}
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(filepath.Join(dir, "a"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("half"))
	f.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("abort left %v", ents)
	}
}

func TestWriteVolatile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "lease.json")
	for _, body := range []string{"one", "two"} {
		if err := WriteVolatile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != body {
			t.Fatalf("read back %q", b)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("leftovers: %v", ents)
	}
}
