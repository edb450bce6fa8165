package fileops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gauge tracks how many operations run at once, in all and per key.
type gauge struct {
	mu      sync.Mutex
	now     int
	peak    int
	perKey  map[string]int
	keyPeak int
}

func (g *gauge) enter(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perKey == nil {
		g.perKey = map[string]int{}
	}
	g.now++
	g.perKey[key]++
	g.peak = max(g.peak, g.now)
	g.keyPeak = max(g.keyPeak, g.perKey[key])
}

func (g *gauge) leave(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.now--
	g.perKey[key]--
}

func TestBoundsInAllAndPerDirectory(t *testing.T) {
	for _, tc := range []struct{ jobs, perDir int }{{4, 1}, {8, 2}, {3, 3}} {
		t.Run(fmt.Sprintf("jobs%d-perdir%d", tc.jobs, tc.perDir), func(t *testing.T) {
			s := New(tc.jobs, tc.perDir)
			var ga gauge
			var ran atomic.Int64
			g := s.Group(context.Background())
			for i := range 400 {
				key := fmt.Sprintf("d%d", i%10)
				g.Go(key, func() error {
					ga.enter(key)
					time.Sleep(200 * time.Microsecond)
					ga.leave(key)
					ran.Add(1)
					return nil
				})
			}
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			if ran.Load() != 400 {
				t.Errorf("%d operations ran, want 400", ran.Load())
			}
			if ga.peak > tc.jobs {
				t.Errorf("%d operations in flight, bound %d", ga.peak, tc.jobs)
			}
			if ga.keyPeak > tc.perDir {
				t.Errorf("%d operations on one directory at once, bound %d", ga.keyPeak, tc.perDir)
			}
			// Ten keys and enough slots: the work must actually spread.
			if ga.peak < min(tc.jobs, 10*tc.perDir) {
				t.Errorf("at most %d operations ran at once with %d slots over 10 directories", ga.peak, tc.jobs)
			}
		})
	}
}

// The bound is the scheduler's, shared by its groups: two groups running
// at once (a store unpack and a generation build) never exceed it together.
func TestGroupsShareTheBound(t *testing.T) {
	s := New(3, 1)
	var ga gauge
	var wg sync.WaitGroup
	for gi := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := s.Group(context.Background())
			for i := range 60 {
				key := fmt.Sprintf("g%d-d%d", gi, i%6)
				g.Go(key, func() error {
					ga.enter(key)
					time.Sleep(100 * time.Microsecond)
					ga.leave(key)
					return nil
				})
			}
			if err := g.Wait(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ga.peak > 3 {
		t.Errorf("%d operations in flight across two groups, bound 3", ga.peak)
	}
}

// One directory's operations run in the order queued, and a directory with
// many operations does not hold back one with few: each key gives its slot
// back after every operation.
func TestOrderAndTurns(t *testing.T) {
	s := New(1, 1)
	var mu sync.Mutex
	var order []string
	g := s.Group(context.Background())
	block := make(chan struct{})
	g.Go("big", func() error { <-block; return nil }) // holds the only slot
	for i := range 5 {
		g.Go("big", func() error {
			mu.Lock()
			order = append(order, fmt.Sprint("big", i))
			mu.Unlock()
			time.Sleep(5 * time.Millisecond) // the small directory's runner is surely waiting
			return nil
		})
	}
	g.Go("small", func() error { mu.Lock(); order = append(order, "small"); mu.Unlock(); return nil })
	time.Sleep(20 * time.Millisecond) // both runners wait for the slot
	close(block)
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	last := -1
	smallAt := -1
	for i, o := range order {
		if o == "small" {
			smallAt = i
			continue
		}
		var n int
		fmt.Sscanf(o, "big%d", &n)
		if n != last+1 {
			t.Fatalf("directory order broken: %v", order)
		}
		last = n
	}
	if smallAt < 0 || smallAt > 2 {
		t.Errorf("the small directory ran at position %d of %v: it waited for the big one", smallAt, order)
	}
}

func TestFirstErrorDropsQueuedWork(t *testing.T) {
	s := New(2, 1)
	g := s.Group(context.Background())
	boom := errors.New("boom")
	var after atomic.Int64
	g.Go("a", func() error { return boom })
	for range 100 {
		g.Go("a", func() error { after.Add(1); return nil })
	}
	err := g.Wait()
	if !errors.Is(err, boom) {
		t.Fatalf("Wait = %v, want boom", err)
	}
	if after.Load() != 0 {
		t.Errorf("%d operations queued behind the failure in its directory ran", after.Load())
	}
	// A group after the failure starts afresh: the scheduler has no
	// slot leaked.
	g2 := s.Group(context.Background())
	var n atomic.Int64
	for i := range 10 {
		g2.Go(fmt.Sprint(i), func() error { n.Add(1); return nil })
	}
	if err := g2.Wait(); err != nil || n.Load() != 10 {
		t.Fatalf("after a failed group: %v, %d of 10 ran", err, n.Load())
	}
}

func TestCancelDropsQueuedWork(t *testing.T) {
	s := New(1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	g := s.Group(ctx)
	started := make(chan struct{})
	release := make(chan struct{})
	var ran atomic.Int64
	g.Go("x", func() error { close(started); <-release; ran.Add(1); return nil })
	<-started // x holds the only slot
	for i := range 50 {
		g.Go(fmt.Sprint(i), func() error { ran.Add(1); return nil })
	}
	cancel()
	close(release)
	if err := g.Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	if ran.Load() != 1 {
		t.Errorf("%d operations ran, want only the one running at the cancel", ran.Load())
	}
	g.Go("late", func() error { t.Error("an operation queued after the stop ran"); return nil })
	if s.Acquire(context.Background()) {
		s.Release()
	} else {
		t.Error("a slot is held after the group stopped")
	}
}

// Everything ran: a context ending afterwards is no error.
func TestWaitAfterCompleteWorkIgnoresLateCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	g := New(4, 1).Group(ctx)
	done := make(chan struct{})
	g.Go("a", func() error { close(done); return nil })
	<-done
	time.Sleep(10 * time.Millisecond) // the runner leaves its empty queue
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatalf("Wait = %v after every operation succeeded", err)
	}
}

// Operations may queue more work (a directory's children after it).
func TestGoFromInsideAnOperation(t *testing.T) {
	g := New(2, 1).Group(context.Background())
	var n atomic.Int64
	var add func(depth int, key string)
	add = func(depth int, key string) {
		g.Go(key, func() error {
			n.Add(1)
			if depth < 5 {
				add(depth+1, key+"/a")
				add(depth+1, key+"/b")
			}
			return nil
		})
	}
	add(0, ".")
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 63 {
		t.Errorf("%d operations ran, want 63", n.Load())
	}
}

func TestAcquireGivesBackOnCancel(t *testing.T) {
	s := New(1, 1)
	if !s.Acquire(context.Background()) {
		t.Fatal("no slot in an idle scheduler")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if s.Acquire(ctx) {
		t.Fatal("a second slot of a scheduler of one")
	}
	s.Release()
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	for range 100 {
		if s.Acquire(cctx) {
			t.Fatal("a cancelled context won a slot")
		}
	}
}

func TestMakeDirsAndFsyncAll(t *testing.T) {
	root := t.TempDir()
	dirs := map[string]bool{}
	for i := range 20 {
		dirs[fmt.Sprintf("p%d/q%d/r", i%3, i)] = true
		dirs[fmt.Sprintf("p%d/q%d", i%3, i)] = true
		dirs[fmt.Sprintf("p%d", i%3)] = true
	}
	s := New(4, 1)
	if err := s.MakeDirs(context.Background(), root, dirs); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for d := range dirs {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
		paths = append(paths, d)
	}
	// Again: existing directories are fine.
	if err := s.MakeDirs(context.Background(), root, dirs); err != nil {
		t.Fatal(err)
	}
	if err := s.FsyncAll(context.Background(), root, paths); err != nil {
		t.Fatal(err)
	}
	err := s.FsyncAll(context.Background(), root, []string{"missing"})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FsyncAll of a missing path = %v", err)
	}
	// A file where a directory's parent should be is a clear error.
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.MakeDirs(context.Background(), root, map[string]bool{"file/sub": true}); err == nil {
		t.Error("MakeDirs under a file succeeded")
	}
}

func TestFilesystemTable(t *testing.T) {
	// FUSE must never trust syncfs: the kernel does not forward it to
	// most FUSE servers (MooseFS on RunPod among them).
	if filesystems[0x65735546].SyncFS || !filesystems[0x65735546].Network {
		t.Error("FUSE trusts syncfs or is not a network filesystem")
	}
	if !filesystems[0x6969].Network {
		t.Error("NFS is not a network filesystem")
	}
	if fs := FilesystemOf(filepath.Join(t.TempDir(), "missing")); fs.SyncFS || fs.Network {
		t.Errorf("a missing directory is described as %+v, want the cautious answer", fs)
	}
	if KnownLocal(filepath.Join(t.TempDir(), "missing")) {
		t.Error("a missing directory is known local")
	}
	if _, err := os.Stat("/dev/shm"); err == nil && !KnownLocal("/dev/shm") {
		t.Error("/dev/shm (tmpfs) is not known local")
	}
}

const sampleMountinfo = `22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
57 22 0:41 / /runpod-volume rw,nosuid,nodev,relatime - fuse mfs\043mfsmaster:9421 rw,user_id=0,group_id=0,allow_other
58 57 0:42 / /runpod-volume/inner rw - tmpfs tmpfs rw
59 22 0:43 / /mnt/with\040space rw - fuse.mfs mfsmaster:9421 rw
60 22 0:44 / /data rw - fuse.juicefs JuiceFS:vol rw
61 22 0:45 / /runpod rw shared:5 master:1 - fuse mfs#other rw
`

func TestMountFor(t *testing.T) {
	for _, tc := range []struct {
		path, point string
		moose       bool
	}{
		{"/runpod-volume", "/runpod-volume", true},
		{"/runpod-volume/.volboot/store", "/runpod-volume", true},
		{"/runpod-volume/inner/x", "/runpod-volume/inner", false},
		{"/runpod-volumes", "/", false}, // a name sharing the prefix is not inside
		{"/mnt/with space/a", "/mnt/with space", true},
		{"/data/x", "/data", false},
		{"/runpod/x", "/runpod", true}, // optional fields before the separator
		{"/etc", "/", false},
	} {
		m, ok := mountFor(sampleMountinfo, tc.path)
		if !ok || m.point != tc.point || isMooseFS(m) != tc.moose {
			t.Errorf("%s: mount %+v (found %v, MooseFS %v), want %s, MooseFS %v", tc.path, m, ok, isMooseFS(m), tc.point, tc.moose)
		}
	}
	if m, _ := mountFor(sampleMountinfo, "/runpod-volume"); m.source != "mfs#mfsmaster:9421" {
		t.Errorf("source %q: \\043 not unescaped", m.source)
	}
	if _, ok := mountFor("garbage\n\n1 2 3\n", "/x"); ok {
		t.Error("a mount found in garbage")
	}
}

// FuzzMountFor: mountinfo is read from the kernel, but a parser never
// panics, and whatever it picks holds the path.
func FuzzMountFor(f *testing.F) {
	f.Add(sampleMountinfo, "/runpod-volume/x")
	f.Add("1 2 3 4 /a\\0 - - x y", "/a")
	f.Add("1 2 3 4 \\ o - fuse mfs# o", "/")
	f.Fuzz(func(t *testing.T, info, p string) {
		m, ok := mountFor(info, p)
		if ok && m.point != p && !strings.HasPrefix(p, strings.TrimSuffix(m.point, "/")+"/") {
			t.Fatalf("mount %q does not hold %q", m.point, p)
		}
		_ = isMooseFS(m)
	})
}
