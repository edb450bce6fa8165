package locallayout

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/volboot/volboot/bootstrap/pack"
)

// testPack writes a pack like a generation's into the volume's packs
// directory: a skeleton link, an executable script, small files in a few
// directories, and a big file left on the volume under .volboot/store.
func testPack(t *testing.T, vol string) Options {
	t.Helper()
	big := filepath.Join(vol, ".volboot", "store", "abc", "pkg", "libbig.so")
	if err := os.MkdirAll(filepath.Dir(big), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, bytes.Repeat([]byte{7}, 300<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := pack.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.File("bin/tool", true, 1_700_000_000e9, []byte("#!/bin/sh\necho tool\n")))
	must(w.Dir("include"))
	must(w.File("lib/python3.11/site-packages/pkg/__init__.py", false, 1_700_000_000e9, []byte("X = 1\n")))
	must(w.VolumeLink("lib/python3.11/site-packages/pkg/libbig.so", ".volboot/store/abc/pkg/libbig.so", 300<<10))
	for i := range 50 {
		must(w.File(fmt.Sprintf("lib/python3.11/site-packages/pkg/sub/m%03d.py", i), false, 1_700_000_000e9, []byte("pass\n")))
	}
	must(w.Symlink("lib64", "lib"))
	must(w.File("pyvenv.cfg", false, 1_700_000_000e9, []byte("home = /usr/bin\n")))
	must(w.Close())
	sum := sha256.Sum256(buf.Bytes())
	sha := hex.EncodeToString(sum[:])
	packs := filepath.Join(vol, ".volboot", "packs")
	must(os.MkdirAll(packs, 0o755))
	p := filepath.Join(packs, PackName("gen1", sha))
	must(os.WriteFile(p, buf.Bytes(), 0o644))
	return Options{Volume: vol, Generation: "gen1", PackPath: p, BootID: "boot-1",
		Pack: PackRecord{SHA256: sha, Size: int64(buf.Len()), Files: 53, Bytes: 1000, Generation: "gen1"}}
}

func TestMaterializeAndReuse(t *testing.T) {
	vol := t.TempDir()
	o := testPack(t, vol)
	o.LocalDir = t.TempDir()
	res, err := Materialize(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reused || res.Dir != Dir(o.LocalDir, "gen1") {
		t.Fatalf("first materialization: %+v", res)
	}
	// Files are real files, the big one a link to the volume, directories
	// real, lib64 the skeleton's link.
	sp := filepath.Join(res.Dir, "lib", "python3.11", "site-packages", "pkg")
	if fi, err := os.Lstat(sp); err != nil || !fi.IsDir() {
		t.Fatalf("site-packages/pkg is not a real directory: %v", err)
	}
	if target, err := os.Readlink(filepath.Join(sp, "libbig.so")); err != nil || target != filepath.Join(vol, ".volboot/store/abc/pkg/libbig.so") {
		t.Fatalf("libbig.so -> %q, %v", target, err)
	}
	if fi, err := os.Lstat(filepath.Join(res.Dir, "bin", "tool")); err != nil || fi.Mode()&0o111 == 0 || !fi.Mode().IsRegular() {
		t.Fatalf("bin/tool: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(res.Dir, "include")); err != nil || !fi.IsDir() {
		t.Fatalf("the empty include directory is missing: %v", err)
	}
	if res.Marker.Files != 53 || res.Marker.Links != 1 {
		t.Errorf("marker counts %+v", res.Marker)
	}
	if problems, err := Verify(res.Dir, o); err != nil || len(problems) != 0 {
		t.Fatalf("Verify of a fresh tree: %v %v", problems, err)
	}

	// The next boot reuses it.
	again, err := Materialize(context.Background(), o)
	if err != nil || !again.Reused || again.Lease == nil {
		t.Fatalf("second materialization: %+v %v", again, err)
	}
	res.Lease.Close()
	again.Lease.Close()

	// Damage is found by Verify.
	if err := os.WriteFile(filepath.Join(sp, "__init__.py"), []byte("X = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sp, "by_hand.py"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	problems, err := Verify(res.Dir, o)
	if err != nil || len(problems) != 3 || !strings.Contains(strings.Join(problems, "\n"), "bytecode would be stale") || !strings.Contains(strings.Join(problems, "\n"), "__init__.py: content differs") || !strings.Contains(strings.Join(problems, "\n"), "by_hand.py") {
		t.Fatalf("Verify of a damaged tree: %q %v", problems, err)
	}

	// A tree made before a reboot, or for another volume path, is made
	// again.
	for _, change := range []func(*Options){
		func(o *Options) { o.BootID = "boot-2" },
		func(o *Options) { o.Volume = vol + "/" },
	} {
		o2 := o
		change(&o2)
		res, err := Materialize(context.Background(), o2)
		if err != nil || res.Reused {
			t.Fatalf("materialization after a change: %+v %v", res, err)
		}
		res.Lease.Close()
	}
	if ents, _ := os.ReadDir(filepath.Join(o.LocalDir, "envs")); len(ents) != 1 {
		t.Errorf("envs holds %d entries after remaking the tree, want 1", len(ents))
	}
	// The trees replaced went to the local trash, in one rename each.
	if ents, _ := os.ReadDir(TrashDir(o.LocalDir)); len(ents) != 2 {
		t.Errorf("the local trash holds %d entries, want the 2 trees replaced", len(ents))
	}
}

func TestMaterializeRefusesBadPacks(t *testing.T) {
	vol := t.TempDir()
	o := testPack(t, vol)
	o.LocalDir = t.TempDir()
	data, _ := os.ReadFile(o.PackPath)
	for _, c := range []struct {
		name string
		set  func(*Options)
		want string
	}{
		{"wrong digest", func(o *Options) { o.Pack.SHA256 = strings.Repeat("1", 64) }, "sha256"},
		{"over budget", func(o *Options) { o.Budget = 100 }, "budget"},
		{"cut short", func(o *Options) {
			p := filepath.Join(t.TempDir(), "cut.pack")
			os.WriteFile(p, data[:len(data)/2], 0o644)
			o.PackPath = p
		}, "damaged"},
		{"volume file gone", func(o *Options) { o.Volume = t.TempDir() }, "no such file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o2 := o
			o2.LocalDir = t.TempDir()
			c.set(&o2)
			_, err := Materialize(context.Background(), o2)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error saying %q, got %v", c.want, err)
			}
			// Nothing is published, nothing left behind.
			if ents, _ := os.ReadDir(filepath.Join(o2.LocalDir, "envs")); len(ents) != 0 {
				t.Fatalf("a failed materialization left %v", ents)
			}
		})
	}
}

// Several processes of one container laying out one generation at once
// all end with the same complete tree.
func TestMaterializeConcurrent(t *testing.T) {
	vol := t.TempDir()
	o := testPack(t, vol)
	o.LocalDir = t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res *Result
			res, errs[i] = Materialize(context.Background(), o)
			if res != nil {
				res.Lease.Close()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if problems, err := Verify(Dir(o.LocalDir, "gen1"), o); err != nil || len(problems) != 0 {
		t.Fatalf("Verify: %v %v", problems, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(o.LocalDir, "envs")); len(ents) != 1 {
		t.Errorf("envs holds %d entries, want 1", len(ents))
	}
}

// Several processes of one container that all find a tree they cannot
// reuse (made before a reboot) replace it once between them: none takes
// another's brief look at the old tree, or its lease on the new one, for
// a tree in use, and all end on the one new tree.
func TestMaterializeConcurrentReplace(t *testing.T) {
	vol := t.TempDir()
	o := testPack(t, vol)
	o.LocalDir = t.TempDir()
	res, err := Materialize(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	res.Lease.Close()
	o.BootID = "boot-2"
	var wg sync.WaitGroup
	results := make([]*Result, 6)
	errs := make([]error, len(results))
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = Materialize(context.Background(), o)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", i, err)
		}
		defer results[i].Lease.Close()
	}
	if problems, err := Verify(Dir(o.LocalDir, "gen1"), o); err != nil || len(problems) != 0 {
		t.Fatalf("Verify: %v %v", problems, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(o.LocalDir, "envs")); len(ents) != 1 {
		t.Errorf("envs holds %d entries, want 1", len(ents))
	}
}
