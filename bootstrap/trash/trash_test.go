package trash_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/trash"
)

// tree makes a directory of dirs subdirectories, two levels deep, with
// files files in each.
func tree(t *testing.T, root string, dirs, files int) int {
	t.Helper()
	n := 1
	for i := range dirs {
		d := filepath.Join(root, fmt.Sprint("d", i), "inner")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		n += 2
		for j := range files {
			if err := os.WriteFile(filepath.Join(d, fmt.Sprint("f", j)), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	return n
}

func TestPutAndEmpty(t *testing.T) {
	vol := t.TempDir()
	can := &trash.Can{Dir: filepath.Join(vol, ".volboot", "trash"), Ops: fileops.New(4, 1)}
	if err := os.MkdirAll(filepath.Dir(can.Dir), 0o755); err != nil {
		t.Fatal(err)
	}
	// Nothing to put is not an error, and makes no trash directory.
	if err := can.Put(filepath.Join(vol, "missing")); err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range 3 {
		p := filepath.Join(vol, fmt.Sprint("gen", i))
		want += tree(t, p, 5, 20+30*i) // 20, 50 and 80 files a directory: several unlink batches
		if err := can.Put(p); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s still there after Put: %v", p, err)
		}
	}
	f := filepath.Join(vol, "file")
	os.WriteFile(f, []byte("x"), 0o644)
	if err := can.Put(f); err != nil {
		t.Fatal(err)
	}
	want++
	if n := can.Items(); n != 4 {
		t.Fatalf("trash holds %d items, want 4", n)
	}
	r, err := can.Empty(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r.Items != 4 || r.Removed != want || r.Left != 0 {
		t.Errorf("report %+v, want 4 items, %d removed, none left", r, want)
	}
	if n := can.Items(); n != 0 {
		t.Errorf("trash holds %d items after Empty", n)
	}
	// An empty or missing trash is fine.
	os.Remove(can.Dir)
	if r, err := can.Empty(context.Background()); err != nil || r != (trash.Report{}) {
		t.Errorf("Empty of no trash: %+v, %v", r, err)
	}
}

// TestEmptyClaims: an item another emptier holds is left to it while that
// emptier may be alive; one whose emptier is gone (this host, pid dead or
// ours but another process; or another host, claimed longer than ClaimTTL
// ago) is taken over.
func TestEmptyClaims(t *testing.T) {
	vol := t.TempDir()
	now := time.Now()
	can := &trash.Can{Dir: filepath.Join(vol, "trash"), ClaimTTL: time.Minute, Now: func() time.Time { return now }}
	os.Mkdir(can.Dir, 0o755)
	host, _ := os.Hostname()
	host = atomicfile.HostToken(host)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	claimed := ".removing-" + fmt.Sprint(now.Unix()) + ".vbtmp."
	claims := map[string]bool{ // name -> taken over
		claimed + host + "." + fmt.Sprint(os.Getppid()) + ".0000000000000000000a":     false, // alive (our parent)
		claimed + host + "." + fmt.Sprint(dead.Process.Pid) + ".0000000000000000000b": true,  // gone
		claimed + host + "." + fmt.Sprint(os.Getpid()) + ".0000000000000000000c":      true,  // our pid, an earlier process (a restarted container's pid 1)
		claimed + "otherhost.77.0000000000000000000d":                                 false, // another host, just claimed
	}
	for name := range claims {
		tree(t, filepath.Join(can.Dir, name), 2, 3)
	}
	r, err := can.Empty(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, gone := range claims {
		_, err := os.Lstat(filepath.Join(can.Dir, name))
		if gone != (err != nil) {
			t.Errorf("%s: removed = %v, want %v", name, err != nil, gone)
		}
	}
	if r.Items != 2 || r.Left != 2 {
		t.Errorf("report %+v, want 2 items removed and 2 left", r)
	}
	// Later, the other host's claim has expired.
	now = now.Add(2 * time.Minute)
	if r, err := can.Empty(context.Background()); err != nil || r.Items != 1 || r.Left != 1 {
		t.Errorf("after the claim TTL: %+v, %v; want the other host's item taken", r, err)
	}
}

func TestEmptyCancelled(t *testing.T) {
	vol := t.TempDir()
	can := &trash.Can{Dir: filepath.Join(vol, "trash")}
	p := filepath.Join(vol, "gen")
	tree(t, p, 3, 3)
	if err := can.Put(p); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := can.Empty(ctx)
	if !errors.Is(err, context.Canceled) || r.Left != 1 || r.Items != 0 {
		t.Fatalf("cancelled Empty: %+v, %v", r, err)
	}
	// The next one finishes the job.
	if r, err := can.Empty(context.Background()); err != nil || r.Items != 1 || can.Items() != 0 {
		t.Fatalf("Empty after a cancelled one: %+v, %v, %d items left", r, err, can.Items())
	}
}

// TestEmptyCancelledMidway: an Empty whose context ends while it removes a
// tree stops soon, says so, and leaves the item (claimed, half removed) in
// the trash for a later emptier (TestEmptyClaims: one whose claimer is
// gone takes it over).
func TestEmptyCancelledMidway(t *testing.T) {
	vol := t.TempDir()
	can := &trash.Can{Dir: filepath.Join(vol, "trash"), Ops: fileops.New(2, 1)}
	p := filepath.Join(vol, "gen")
	want := tree(t, p, 40, 100)
	if err := can.Put(p); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(5 * time.Millisecond)
		cancel()
	}()
	r, err := can.Empty(ctx)
	if !errors.Is(err, context.Canceled) || r.Items != 0 || r.Left != 1 || r.Removed >= want {
		t.Fatalf("cancelled Empty: %+v, %v; want the item left, fewer than %d removed, context.Canceled", r, err, want)
	}
	if n := can.Items(); n != 1 {
		t.Fatalf("trash holds %d items, want the half-removed one", n)
	}
}
