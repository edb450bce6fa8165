package lockfile_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/lockfile"
)

// The reconciler's use: take the lock, report progress through the phase,
// confirm the lock right before each commit, stop on fencing, release.
func ExampleAcquire() {
	dir, _ := os.MkdirTemp("", "volume")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	// The command line passes os.Getenv(lockfile.EnvMode) here.
	mode, err := lockfile.ParseMode("")
	if err != nil {
		fmt.Println(err)
		return
	}
	l, err := lockfile.Acquire(ctx, lockfile.Options{
		Dir:         filepath.Join(dir, ".volboot"),
		Logger:      zap.NewNop(),
		Mode:        mode,
		WaitTimeout: 30 * time.Minute, // --lock-timeout
		Phase:       "planning",
	})
	if err != nil {
		fmt.Println(err) // names the holder on ErrTimeout
		return
	}
	defer l.Release()

	for _, step := range []string{"downloading torch-2.8.0 (45%)", "building generation"} {
		l.SetPhase(step)
		select {
		case <-l.Lost():
			fmt.Println("stop:", l.Err())
			return
		default:
		}
		// ... work ...
	}
	// Right before the write that must not happen after a takeover:
	if err := l.Check(); errors.Is(err, lockfile.ErrFenced) {
		fmt.Println("another worker took over; not committing")
		return
	}
	fmt.Println("commit state.json with fencing token", l.Epoch())
	// Output: commit state.json with fencing token 1
}

// gc keeps every generation a live lease names.
func ExampleListLive() {
	dir, _ := os.MkdirTemp("", "volume")
	defer os.RemoveAll(dir)
	vb := filepath.Join(dir, ".volboot")
	ls, err := lockfile.HoldLease(context.Background(), lockfile.LeaseOptions{Dir: vb, WorkerID: "pod-1", Generation: "3f9a"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ls.Release()

	live, err := lockfile.ListLive(vb, lockfile.ListOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range live {
		if e.Record == nil {
			fmt.Println("unreadable live lease: keep every generation")
			continue
		}
		fmt.Println("keep", e.Record.Generation, "for", e.WorkerID)
	}
	// Output: keep 3f9a for pod-1
}
