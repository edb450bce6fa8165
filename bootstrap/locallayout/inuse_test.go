package locallayout

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/pack"
)

// helperEnv makes the test binary a helper process (TestHelperProcess):
// "hold" materializes the options it is given and holds the lease until
// its stdin closes; "collect" runs Collect on their local directory.
const helperEnv = "VOLBOOT_LOCALLAYOUT_HELPER"

func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("a helper process for the tests that need another process")
	}
	var o Options
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv+"_OPTIONS")), &o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	switch mode {
	case "hold":
		res, err := Materialize(context.Background(), o)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("held", res.Dir)
		io.Copy(io.Discard, os.Stdin)
		res.Lease.Close()
	case "collect":
		fmt.Println("collecting")
		t0 := time.Now()
		if _, err := Collect(context.Background(), CollectOptions{LocalDir: o.LocalDir}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(time.Since(t0).Nanoseconds())
	}
	os.Exit(0)
}

// helper starts the test binary as a helper process in mode on o.
func helper(t *testing.T, mode string, o Options) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	data, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperEnv+"_OPTIONS="+string(data))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, stdin, bufio.NewReader(stdout)
}

// A tree another process runs from is neither replaced by a worker that
// cannot reuse it nor collected; once that process is gone (killed: its
// lock goes with it), Collect removes it.
func TestTreeInUseByAnotherProcess(t *testing.T) {
	vol := t.TempDir()
	o := testPack(t, vol)
	o.LocalDir = t.TempDir()
	cmd, _, out := helper(t, "hold", o)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("the helper did not hold the tree: %v", err)
	}
	tree := Dir(o.LocalDir, "gen1")
	if line != "held "+tree+"\n" {
		t.Fatalf("helper: %q", line)
	}
	before, err := os.Lstat(tree)
	if err != nil {
		t.Fatal(err)
	}

	// A worker that cannot reuse it (made before a reboot, for it) leaves
	// it, and says why.
	o2 := o
	o2.BootID = "boot-2"
	if res, err := Materialize(context.Background(), o2); !errors.Is(err, ErrInUse) {
		t.Fatalf("Materialize over a tree in use: %+v %v", res, err)
	}
	// Collect leaves it too.
	r, err := Collect(context.Background(), CollectOptions{LocalDir: o.LocalDir})
	if err != nil || !slices.Equal(r.InUse, []string{"gen1"}) || len(r.Removed) != 0 {
		t.Fatalf("Collect with the tree in use: %+v %v", r, err)
	}
	// Repair's Retire too.
	if err := Retire(context.Background(), o.LocalDir, tree); !errors.Is(err, ErrInUse) {
		t.Fatalf("Retire of a tree in use: %v", err)
	}
	after, err := os.Lstat(tree)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the tree in use left its name: %v", err)
	}
	if problems, err := Verify(tree, o); err != nil || len(problems) != 0 {
		t.Fatalf("the tree in use was changed: %v %v", problems, err)
	}
	// A worker that can reuse it shares it.
	res, err := Materialize(context.Background(), o)
	if err != nil || !res.Reused {
		t.Fatalf("Materialize of a tree in use that fits: %+v %v", res, err)
	}
	res.Lease.Close()

	// The holder killed, its lock is gone.
	cmd.Process.Kill()
	cmd.Wait()
	r, err = Collect(context.Background(), CollectOptions{LocalDir: o.LocalDir})
	if err != nil || !slices.Equal(r.Removed, []string{"gen1"}) || r.Trash.Items != 1 {
		t.Fatalf("Collect once the holder is gone: %+v %v", r, err)
	}
	if _, err := os.Lstat(tree); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the tree is still there: %v", err)
	}
	if ents, _ := os.ReadDir(TrashDir(o.LocalDir)); len(ents) != 0 {
		t.Fatalf("the local trash still holds %d items", len(ents))
	}
}

// Collect removes the trees nothing holds or keeps, a tree without its
// marker and dead processes' half-made trees, and leaves trees held
// (by another open file of this very process too), kept, made for
// another volume when it is told its volume, and what is not a tree.
func TestCollect(t *testing.T) {
	vol := t.TempDir()
	o := testPack(t, vol)
	o.LocalDir = t.TempDir()
	envs := filepath.Join(o.LocalDir, "envs")
	var held *Lease
	for _, gen := range []string{"gen1", "gen2", "gen3", "gen4"} {
		og := o
		og.Generation = gen
		res, err := Materialize(context.Background(), og)
		if err != nil {
			t.Fatal(err)
		}
		if gen == "gen1" {
			held = res.Lease
		} else {
			res.Lease.Close()
		}
	}
	if err := os.Remove(filepath.Join(envs, "gen4", MarkerName)); err != nil {
		t.Fatal(err)
	}
	// A tree another volume's workers made on this disk (the volume at
	// another path).
	other := filepath.Join(t.TempDir(), "vol")
	if err := os.Symlink(vol, other); err != nil {
		t.Fatal(err)
	}
	o7 := o
	o7.Generation, o7.Volume = "gen7", other
	res7, err := Materialize(context.Background(), o7)
	if err != nil {
		t.Fatal(err)
	}
	res7.Lease.Close()
	// A half-made tree of a process that is gone, one of a process alive
	// (this one), and a file.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	leftover := filepath.Join(envs, ".gen5.vbtmp."+atomicfile.HostToken(host)+"."+strconv.Itoa(dead.Process.Pid)+".0123456789abcdef0123")
	live := atomicfile.TempName(filepath.Join(envs, "gen6"))
	for _, d := range []string{leftover, live} {
		if err := os.MkdirAll(filepath.Join(d, "lib"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(envs, "notes.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	listing := func() []string {
		var names []string
		ents, _ := os.ReadDir(envs)
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	before := listing()
	dry, err := Collect(context.Background(), CollectOptions{LocalDir: o.LocalDir, Volume: vol, DryRun: true, Keep: func(id string) bool { return id == "gen3" }})
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || !slices.Equal(dry.Removed, []string{"gen2", "gen4"}) || !slices.Equal(dry.InUse, []string{"gen1"}) || dry.Leftovers != 1 || dry.Bytes <= 0 || dry.Trash.Items != 0 {
		t.Fatalf("Collect, dry run: %+v", dry)
	}
	if after := listing(); !slices.Equal(before, after) {
		t.Fatalf("the dry run changed envs from %v to %v", before, after)
	}
	r, err := Collect(context.Background(), CollectOptions{LocalDir: o.LocalDir, Volume: vol, Keep: func(id string) bool { return id == "gen3" }})
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != dry.Bytes {
		t.Errorf("Collect freed %d bytes, the dry run said %d", r.Bytes, dry.Bytes)
	}
	if !slices.Equal(r.Removed, []string{"gen2", "gen4"}) || !slices.Equal(r.InUse, []string{"gen1"}) || r.Leftovers != 1 || r.Trash.Items != 3 || r.Trash.Left != 0 {
		t.Fatalf("Collect: %+v", r)
	}
	var names []string
	ents, _ := os.ReadDir(envs)
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{filepath.Base(live), "gen1", "gen3", "gen7", "notes.txt"}; !slices.Equal(names, want) {
		t.Fatalf("envs holds %v, want %v", names, want)
	}
	held.Close()
	r, err = Collect(context.Background(), CollectOptions{LocalDir: o.LocalDir, Keep: func(id string) bool { return id == "gen3" }})
	if err != nil || !slices.Equal(r.Removed, []string{"gen1", "gen7"}) {
		t.Fatalf("Collect once the lease is closed, for every volume: %+v %v", r, err)
	}
}

// bigPack writes a pack of n small files in n/50 directories.
func bigPack(t *testing.T, vol string, n int) Options {
	t.Helper()
	var buf bytes.Buffer
	w, err := pack.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := w.File(fmt.Sprintf("lib/site-packages/p%03d/m%03d.py", i/50, i%50), false, 1_700_000_000e9, []byte("x = 1\n")); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	p := filepath.Join(vol, "big.pack")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return Options{Volume: vol, Generation: "big", PackPath: p, BootID: "boot-1",
		Pack: PackRecord{SHA256: hex.EncodeToString(sum[:]), Size: int64(buf.Len()), Files: n}}
}

// Collects killed (SIGKILL, at random moments of the removal) leave
// either the whole tree at its name or none, never a part a boot would
// take for a tree; the next boot lays out or reuses a sound tree, and the
// next Collect finishes what the killed one left in the trash.
func TestCollectKilledHalfway(t *testing.T) {
	vol := t.TempDir()
	o := bigPack(t, vol, 500)
	o.LocalDir = t.TempDir()
	tree := Dir(o.LocalDir, "big")
	materialize := func() {
		t.Helper()
		res, err := Materialize(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		res.Lease.Close()
		if problems, err := Verify(tree, o); err != nil || len(problems) != 0 {
			t.Fatalf("the tree at its name is not sound: %v %v", problems, err)
		}
	}
	materialize()
	// How long a Collect takes in a helper, to spread the kills over it.
	cmd, _, out := helper(t, "collect", o)
	var full time.Duration
	if _, err := fmt.Fscanf(out, "collecting\n%d\n", &full); err != nil || cmd.Wait() != nil {
		t.Fatalf("the helper's Collect: %v", err)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16))
	landed := 0
	for try := 0; try < 8 && landed < 2; try++ {
		materialize()
		cmd, _, out := helper(t, "collect", o)
		if line, err := out.ReadString('\n'); err != nil || line != "collecting\n" {
			t.Fatalf("the helper: %q %v", line, err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(full))))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		ents, _ := os.ReadDir(TrashDir(o.LocalDir))
		if len(ents) > 0 {
			landed++ // killed with part of the tree left in the trash
		}
		// What is at the name is whole (or absent): Materialize reuses it
		// or lays the tree out again, and it verifies.
		if _, err := os.Lstat(tree); err == nil {
			if problems, err := Verify(tree, o); err != nil || len(problems) != 0 {
				t.Fatalf("after a kill, the tree at its name: %v %v", problems, err)
			}
		}
	}
	if landed == 0 {
		t.Fatalf("no kill landed during a removal (a Collect takes %s here)", full)
	}
	materialize()
	r, err := Collect(context.Background(), CollectOptions{LocalDir: o.LocalDir})
	if err != nil || r.Trash.Left != 0 {
		t.Fatalf("Collect after the kills: %+v %v", r, err)
	}
	if ents, _ := os.ReadDir(TrashDir(o.LocalDir)); len(ents) != 0 {
		t.Fatalf("the local trash still holds %d items", len(ents))
	}
	t.Logf("%d kills landed in a Collect that takes %s", landed, full.Round(time.Millisecond))
}

// A cancelled Collect stops and leaves the rest to the next.
func TestCollectCancelled(t *testing.T) {
	vol := t.TempDir()
	o := bigPack(t, vol, 500)
	o.LocalDir = t.TempDir()
	res, err := Materialize(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	res.Lease.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Collect(ctx, CollectOptions{LocalDir: o.LocalDir}); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled Collect: %v", err)
	}
	r, err := Collect(context.Background(), CollectOptions{LocalDir: o.LocalDir})
	if err != nil || !slices.Equal(r.Removed, []string{"big"}) || r.Trash.Items != 1 {
		t.Fatalf("the next Collect: %+v %v", r, err)
	}
}
