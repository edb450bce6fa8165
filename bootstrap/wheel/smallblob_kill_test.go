package wheel

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// TestSmallBlobKillHelper is the writer TestSmallBlobKilledAfterBlob
// kills: it SIGKILLs itself once the blob is written, before the
// manifest.
func TestSmallBlobKillHelper(t *testing.T) {
	dir := os.Getenv("VOLBOOT_TEST_BLOB_KILL")
	if dir == "" {
		t.Skip("the helper process of TestSmallBlobKilledAfterBlob")
	}
	afterSmallBlob = func(tmp string) {
		if _, err := os.Stat(filepath.Join(tmp, SmallBlobName)); err != nil {
			t.Errorf("no blob before the manifest: %v", err)
			return
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	src := Source{Path: os.Getenv("VOLBOOT_TEST_WHEEL"), Filename: os.Getenv("VOLBOOT_TEST_FILENAME"), SHA256: os.Getenv("VOLBOOT_TEST_SHA")}
	(&Store{Dir: filepath.Join(dir, "store"), Sync: SyncFiles}).Unpack(context.Background(), src)
	t.Fatal("the writer was not killed after its blob")
}

// TestSmallBlobKilledAfterBlob: a writer killed between the blob and the
// manifest leaves nothing that looks complete (no entry at the final
// name, a staging directory without a manifest); the writer that takes
// the staging directory over commits an entry whose manifest describes
// the blob it holds.
func TestSmallBlobKilledAfterBlob(t *testing.T) {
	dir := t.TempDir()
	spec := wheeltest.Spec{Name: "demo", Version: "1.0", Files: []wheeltest.File{
		{Name: "demo/__init__.py", Data: []byte("X = 1\n")},
		{Name: "demo/run.sh", Data: []byte("#!/bin/sh\n"), Mode: 0o755},
	}}
	p, sha, err := wheeltest.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSmallBlobKillHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "VOLBOOT_TEST_BLOB_KILL="+dir, "VOLBOOT_TEST_WHEEL="+p, "VOLBOOT_TEST_FILENAME="+spec.Filename(), "VOLBOOT_TEST_SHA="+sha)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the helper was not killed: %v\n%s", err, out)
	}
	st := &Store{Dir: filepath.Join(dir, "store")}
	if _, err := st.Open(sha); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after the kill the entry opens: %v", err)
	}
	ents, _ := os.ReadDir(st.Dir)
	if len(ents) != 1 || !strings.Contains(ents[0].Name(), sha+PartialSuffix) {
		t.Fatalf("the store holds %v, want the killed writer's staging directory", ents)
	}
	partial := filepath.Join(st.Dir, ents[0].Name())
	if _, err := os.Stat(filepath.Join(partial, SmallBlobName)); err != nil {
		t.Fatalf("the staging directory has no blob: %v", err)
	}
	if _, err := os.Stat(filepath.Join(partial, CompleteName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the staging directory has a manifest: %v", err)
	}

	st.Adopt = func(atomicfile.TempInfo, fs.DirEntry) bool { return true }
	es, err := st.Unpack(context.Background(), Source{Path: p, Filename: spec.Filename(), SHA256: sha})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := st.Resumed(); n != 1 {
		t.Fatalf("resumed %d entries, want the killed writer's", n)
	}
	files, err := ReadSmallBlob(es[0])
	if err != nil || len(files) != len(es[0].Files) {
		t.Fatalf("the resumed entry's blob: %d files, %v; want %d", len(files), err, len(es[0].Files))
	}
}
