// Package reaper does the duties of PID 1 for the processes volboot starts:
// it collects the exit status of every child, including orphaned
// grandchildren the kernel re-parents to volboot, so that none of them stays
// a zombie.
//
// One goroutine, owned by the Reaper, is the only caller of wait4 in the
// process. It waits for any child (wait4(-1)), and hands each exit status to
// whoever started that pid through Reaper.ForkExec; statuses of pids nobody
// registered (orphans) are collected and dropped. Because it reaps every
// child, nothing else in the process may wait for children while a Reaper
// runs: do not call exec.Cmd.Wait, exec.Cmd.Run, exec.Cmd.Output or
// os.Process.Wait beside it, as they would fail with ECHILD or lose a status
// to the Reaper. Start processes with Reaper.ForkExec instead. (volboot
// starts its Reaper only after the bootstrap, whose probes use os/exec.)
//
// When volboot is not PID 1, Start makes it a child subreaper
// (prctl PR_SET_CHILD_SUBREAPER), so orphans of its descendants are
// re-parented to it rather than to the real init, and it reaps them the same
// way.
//
// A child may exit before ForkExec has recorded its pid. ForkExec holds the
// registry lock across fork and registration, and the waiting goroutine
// takes that lock before it decides whether a reaped pid is known, so such a
// status is always delivered, never mistaken for an orphan's.
package reaper

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Reaper owns all waiting for child processes. Create it with Start and stop
// it with Close. Its methods are safe for concurrent use.
type Reaper struct {
	logger *zap.Logger

	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus // pid -> buffered(1) channel
	closed  bool

	sigchld chan os.Signal
	stop    chan struct{}
	done    chan struct{}
}

// Start begins reaping. When the process is not PID 1 it first becomes a
// child subreaper; failing to do so is an error (without it, orphans would
// escape to the host's init and go unreaped only there, which is harmless,
// but the caller asked for reaping and should know it is not happening).
//
// Start installs a SIGCHLD notification; Close removes it.
func Start(logger *zap.Logger) (*Reaper, error) {
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("reaper: becoming child subreaper (prctl PR_SET_CHILD_SUBREAPER): %w", err)
		}
	}
	r := &Reaper{
		logger:  logger,
		waiters: make(map[int]chan syscall.WaitStatus),
		// Buffer one: SIGCHLDs coalesce, and the loop drains every
		// exited child after each wake-up, so one pending wake-up is
		// enough to never miss an exit.
		sigchld: make(chan os.Signal, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	signal.Notify(r.sigchld, syscall.SIGCHLD)
	go r.loop()
	return r, nil
}

// ForkExec starts argv0 with argv and attr (see syscall.ForkExec) and
// returns its pid and a channel that receives its exit status exactly once,
// when it has exited (or been killed). The channel is never closed.
//
// After Close, ForkExec fails.
func (r *Reaper) ForkExec(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, nil, errors.New("reaper: ForkExec after Close")
	}
	pid, err := syscall.ForkExec(argv0, argv, attr)
	if err != nil {
		return 0, nil, fmt.Errorf("starting %s: %w", argv0, err)
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

// Close stops the waiting goroutine and returns once it has ended. Children
// still running are not signalled; their statuses are no longer collected
// by this Reaper, and registered channels never receive. The process stays
// a child subreaper (the flag cannot usefully be dropped while orphans may
// already have been adopted). Close is idempotent.
func (r *Reaper) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	<-r.done
	signal.Stop(r.sigchld)
	return nil
}

func (r *Reaper) loop() {
	defer close(r.done)
	for {
		r.reapAll()
		select {
		case <-r.sigchld:
		case <-r.stop:
			// One last pass so a child that exited just before Close
			// still gets its status delivered.
			r.reapAll()
			return
		}
	}
}

// reapAll collects every child that has exited so far, without blocking.
func (r *Reaper) reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			// ECHILD: no children at all; 0: none exited yet.
			return
		}
		r.deliver(pid, ws)
	}
}

func (r *Reaper) deliver(pid int, ws syscall.WaitStatus) {
	// Taking the lock orders this lookup after any ForkExec that is
	// between fork and registration, which is how an early exit of a
	// freshly started child is told from an orphan's.
	r.mu.Lock()
	ch, ok := r.waiters[pid]
	delete(r.waiters, pid)
	r.mu.Unlock()
	if !ok {
		r.logger.Debug("reaped orphaned process", zap.Int("pid", pid), zap.String("status", Describe(ws)))
		return
	}
	ch <- ws
}

// Describe renders a wait status for logs: "exit 3", "signal killed".
func Describe(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("signal %s", ws.Signal())
	default:
		return fmt.Sprintf("status %#x", uint32(ws))
	}
}

// ExitCode maps a wait status to the shell convention the supervisor exits
// with: the exit code, or 128+signal for a process a signal killed.
func ExitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return 1
	}
}
