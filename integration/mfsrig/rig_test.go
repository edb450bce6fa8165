package mfsrig

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startRig starts a rig for one test, or skips when this machine cannot
// run one and CI is not set (in CI a rig that cannot start fails the test).
func startRig(t *testing.T, o Options) *Rig {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must run the MooseFS tests: %v", err)
		}
		t.Skipf("no MooseFS rig here: %v", err)
	}
	o.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// TestTwoClientsShareOneVolume: what one client writes the other reads,
// and a lookup pays the proxy's round trip.
func TestTwoClientsShareOneVolume(t *testing.T) {
	r := startRig(t, Options{RTT: 20 * time.Millisecond})
	c := r.Clients()
	if len(c) != 2 {
		t.Fatalf("%d clients, want 2", len(c))
	}
	if err := os.WriteFile(filepath.Join(c[0].Mount, "hello"), []byte("from 0"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(c[1].Mount, "hello"))
	if err != nil || string(got) != "from 0" {
		t.Fatalf("client 1 read %q, %v", got, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(c[1].Mount, &st); err != nil || st.Type != unix.FUSE_SUPER_MAGIC {
		t.Fatalf("statfs %s: type %#x, %v: want FUSE", c[1].Mount, st.Type, err)
	}
	// A name that does not exist is looked up at the master every time
	// (MooseFS caches no negative entries by default).
	missing := filepath.Join(c[0].Mount, "missing")
	start := time.Now()
	for i := 0; i < 10; i++ {
		if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("stat %s: %v", missing, err)
		}
	}
	if per := time.Since(start) / 10; per < 20*time.Millisecond {
		t.Fatalf("a lookup took %s at 20 ms RTT: the proxy does not delay the master's traffic", per)
	}
	c[0].Proxy.SetRTT(0)
	if r := c[0].Proxy.RTT(); r != 0 {
		t.Fatalf("RTT %s after SetRTT(0)", r)
	}
}

// TestCutBlocksOneClientOnly: a cut client's metadata operations wait
// for the link and complete once it heals; the other client goes on.
func TestCutBlocksOneClientOnly(t *testing.T) {
	r := startRig(t, Options{})
	c := r.Clients()
	c[0].Proxy.Cut(true)
	done := make(chan error, 1)
	go func() { done <- os.Mkdir(filepath.Join(c[0].Mount, "during-cut"), 0o755) }()
	if err := os.Mkdir(filepath.Join(c[1].Mount, "other"), 0o755); err != nil {
		t.Fatalf("client 1 during client 0's cut: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("mkdir on a cut client returned at once (%v)", err)
	case <-time.After(2 * time.Second):
	}
	c[0].Proxy.Cut(false)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mkdir after the cut healed: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("mkdir still waits 30 s after the cut healed")
	}
	if _, err := os.Stat(filepath.Join(c[1].Mount, "during-cut")); err != nil {
		t.Fatalf("client 1 does not see what client 0 made after the cut: %v", err)
	}
}

// TestFlockAcrossClients records what MooseFS does with flock(2), which
// the volume lock builds on: it excludes across clients, and a lock whose
// client died (mfsmount killed: the host is gone) lingers at the master,
// so that only the holder record's staleness can free the volume.
func TestFlockAcrossClients(t *testing.T) {
	r := startRig(t, Options{})
	c := r.Clients()
	p0, p1 := filepath.Join(c[0].Mount, "lock"), filepath.Join(c[1].Mount, "lock")
	if err := os.WriteFile(p0, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	lock := func(p string) (*os.File, error) {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}
	h0, err := lock(p0)
	if err != nil {
		t.Fatalf("flock on client 0: %v", err)
	}
	if f, err := lock(p1); !errors.Is(err, unix.EWOULDBLOCK) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("flock on client 1 while client 0 holds it: %v, want EWOULDBLOCK", err)
	}
	h0.Close() // releases: the holder process closed its descriptor
	h1, err := lock(p1)
	if err != nil {
		t.Fatalf("flock on client 1 after client 0 released it: %v", err)
	}
	h1.Close()

	h0, err = lock(p0)
	if err != nil {
		t.Fatal(err)
	}
	c[0].Kill()
	defer h0.Close()
	time.Sleep(3 * time.Second)
	if f, err := lock(p1); !errors.Is(err, unix.EWOULDBLOCK) {
		if f != nil {
			f.Close()
		}
		t.Fatalf("flock on client 1 3 s after client 0's host died: %v; want the dead client's lock to linger (EWOULDBLOCK) as MooseFS 3.0 did when this test was written", err)
	}
	if err := c[0].Remount(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p0); err != nil {
		t.Fatalf("client 0 after remounting: %v", err)
	}
}
