// Package supervise runs volboot's handler from bootstrap to exit: it runs
// a cancellable bootstrap, starts the handler in its own process group,
// forwards signals to that group, tracks readiness into the health state,
// restarts on failure when asked, and works out the exit code.
//
// Run takes over signal handling for SIGTERM, SIGINT, SIGHUP, SIGQUIT,
// SIGUSR1 and SIGUSR2 while it runs (and SIGCHLD, through the reaper), so
// exactly one Run may be active in a process, and nothing else in it may
// wait for child processes once the handler starts (see package reaper).
//
// Signals:
//   - During the bootstrap (or a restart backoff), any of the six signals
//     cancels it; Run exits 128+signal once the bootstrap has returned, or
//     after StopGrace if the bootstrap does not return (its goroutine is
//     then abandoned to the process exit).
//   - While the handler runs, each is sent to its process group. SIGTERM
//     and SIGINT also mean "stop": no restart follows, and StopGrace later
//     the group gets SIGKILL if the handler is still alive.
//   - When the handler (the group leader) exits, the rest of its group
//     gets SIGKILL, and so does every other descendant of this process
//     (those that left the group with setsid and were adopted by us):
//     left-over workers would otherwise hold GPU memory the next start, or
//     the next container, needs. So while a handler runs, every child
//     process of this process is the handler's.
//
// The handler's stdout and stderr are volboot's own file descriptors 1 and
// 2, inherited, so its output passes through byte for byte; volboot's own
// lines go only through the Logger.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/volboot/volboot/runtime/health"
	"github.com/volboot/volboot/runtime/notify"
	"github.com/volboot/volboot/runtime/readiness"
	"github.com/volboot/volboot/runtime/reaper"
)

// forwarded is what Run forwards to the handler's process group.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// CatchSignals starts catching the signals Run handles (SIGTERM, SIGINT,
// SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) into a buffered channel. Call it first
// thing in main and pass the channel as Config.Signals, so a signal that
// arrives while flags are parsed or the health server starts is queued for
// Run instead of killing volboot with the default action. stop ends the
// catching; call it after Run returns.
func CatchSignals() (sigs <-chan os.Signal, stop func()) {
	c := make(chan os.Signal, 8)
	signal.Notify(c, forwarded...)
	return c, func() { signal.Stop(c) }
}

// Result is how Run ended.
type Result struct {
	// Code is what volboot should exit with: the handler's code, 128+n
	// for a handler killed by signal n or for volboot stopped by signal
	// n before the handler started, 1 for a failed bootstrap, 126/127
	// when the handler could not be started.
	Code int
	// Signal is the signal that stopped volboot, if one did.
	Signal os.Signal
	// Err says what failed; nil when the handler ran and ended
	// (whatever its code) or a signal stopped the bootstrap, which then
	// returned within StopGrace. Run does not log it: the caller reports
	// it, once.
	Err error
}

// Run runs the bootstrap and then the handler, as Config says, and returns
// when volboot should exit. Cancelling ctx acts like SIGTERM, except that
// the Result carries no Signal (and a bootstrap so stopped gives code 1
// with ctx's error).
//
// After a failure (phase failed: bootstrap error, handler failed with
// restart never, restarts exhausted) Run keeps answering 503 for
// FailureLinger before it returns. It never calls os.Exit.
func Run(ctx context.Context, cfg Config) Result {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{Code: 2, Err: err}
	}
	sigs := cfg.Signals
	if sigs == nil {
		var stop func()
		sigs, stop = CatchSignals()
		defer stop()
	}
	s := &supervisor{cfg: cfg, log: cfg.Logger, state: cfg.State, sigs: sigs, ctx: ctx}
	res := s.run()
	s.stopAfterReady()
	if s.state.Phase() == health.PhaseFailed {
		s.linger()
	}
	return res
}

type supervisor struct {
	cfg   Config
	log   *zap.Logger
	state *health.State
	sigs  <-chan os.Signal
	ctx   context.Context
	rp    *reaper.Reaper

	// The AfterReady goroutine, once started.
	afterStop context.CancelFunc
	afterDone chan struct{}
}

// startAfterReady starts cfg.AfterReady, once.
func (s *supervisor) startAfterReady() {
	if s.cfg.AfterReady == nil || s.afterDone != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.afterStop, s.afterDone = cancel, make(chan struct{})
	go func() {
		defer close(s.afterDone)
		s.cfg.AfterReady(ctx)
	}()
}

// stopAfterReady ends the AfterReady goroutine and waits for it, at most
// StopGrace: a call stuck in a hung filesystem must not hold volboot's exit.
func (s *supervisor) stopAfterReady() {
	if s.afterDone == nil {
		return
	}
	s.afterStop()
	select {
	case <-s.afterDone:
	case <-time.After(s.cfg.StopGrace):
		s.log.Warn("background work after readiness did not stop in time; exiting without it", zap.Duration("waited", s.cfg.StopGrace))
	}
}

func (s *supervisor) run() Result {
	s.state.SetPhase(health.PhaseBootstrapping, "")
	h, res, ok := s.bootstrap()
	if !ok {
		return res
	}
	s.state.BootstrapDone()

	path, err := lookPath(h.Argv, h.Env)
	if err != nil {
		s.fail(err)
		return Result{Code: 127, Err: err}
	}
	rp, err := reaper.Start(s.log)
	if err != nil {
		s.fail(err)
		return Result{Code: 1, Err: err}
	}
	s.rp = rp
	defer rp.Close()

	failures := 0
	for {
		o := s.runOnce(path, h)
		if o.startErr != nil {
			s.fail(o.startErr)
			code := 126
			if errors.Is(o.startErr, syscall.ENOENT) {
				code = 127
			}
			return Result{Code: code, Err: o.startErr}
		}
		code := reaper.ExitCode(o.status)
		if o.stopped || code == 0 || s.cfg.Restart.Mode == RestartNever {
			if code != 0 && !o.stopped {
				s.state.SetPhase(health.PhaseFailed, "handler "+reaper.Describe(o.status))
			} else {
				s.state.SetPhase(health.PhaseStopping, "handler "+reaper.Describe(o.status))
			}
			return Result{Code: code, Signal: o.signal}
		}
		if o.ran >= s.cfg.Restart.ResetAfter {
			failures = 0
		}
		failures++
		if s.cfg.Restart.MaxRestarts > 0 && failures > s.cfg.Restart.MaxRestarts {
			s.log.Error("handler keeps failing; giving up", zap.Int("restarts", failures-1), zap.String("last", reaper.Describe(o.status)))
			s.state.SetPhase(health.PhaseFailed, fmt.Sprintf("handler %s; gave up after %d restarts", reaper.Describe(o.status), failures-1))
			return Result{Code: code}
		}
		wait := s.cfg.Restart.Backoff(failures)
		s.log.Warn("handler failed; restarting after backoff", zap.String("status", reaper.Describe(o.status)), zap.Duration("backoff", wait), zap.Int("attempt", failures))
		s.state.SetPhase(health.PhaseRestarting, "handler "+reaper.Describe(o.status))
		if sig, stopped := s.sleep(wait); stopped {
			s.state.SetPhase(health.PhaseStopping, "stopped while waiting to restart")
			if sig == nil {
				return Result{Code: code}
			}
			return Result{Code: 128 + signum(sig), Signal: sig}
		}
	}
}

func (s *supervisor) fail(err error) {
	s.state.SetPhase(health.PhaseFailed, err.Error())
}

// bootstrap runs cfg.Bootstrap, cancelling it on a signal or ctx. ok is
// false when Run must return res.
func (s *supervisor) bootstrap() (h Handler, res Result, ok bool) {
	bctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	if s.cfg.InitTimeout > 0 {
		wctx, wcancel := context.WithCancel(bctx)
		wdone := make(chan struct{})
		go func() {
			defer close(wdone)
			health.WatchInitBudget(wctx, s.state, s.cfg.InitTimeout, s.cfg.InitWatchInterval, s.log)
		}()
		defer func() { wcancel(); <-wdone }()
	}
	type outcome struct {
		h   Handler
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		h, err := s.cfg.Bootstrap(bctx)
		done <- outcome{h, err}
	}()
	var stopSig os.Signal
	var giveUp <-chan time.Time
	ctxDone := s.ctx.Done()
	for {
		select {
		case sig := <-s.sigs:
			if stopSig == nil {
				stopSig = sig
				s.log.Warn("signal during bootstrap; cancelling it", zap.String("signal", sig.String()))
				s.state.SetPhase(health.PhaseStopping, "signal "+sig.String()+" during bootstrap")
				cancel()
				giveUp = time.After(s.cfg.StopGrace)
			} else {
				s.log.Warn("still waiting for the bootstrap to stop", zap.String("signal", sig.String()))
			}
		case <-ctxDone:
			ctxDone = nil
			s.state.SetPhase(health.PhaseStopping, "stopped during bootstrap")
			cancel()
			giveUp = time.After(s.cfg.StopGrace)
		case <-giveUp:
			// A bootstrap stuck in a system call on a hung network
			// filesystem may never return. Exiting anyway is safe: the
			// kernel drops our flock with the process, and what was
			// half-written sits under temporary names for the next run.
			err := fmt.Errorf("bootstrap did not stop within the stop grace (%s) after cancellation; exiting without it", s.cfg.StopGrace)
			if stopSig != nil {
				return Handler{}, Result{Code: 128 + signum(stopSig), Signal: stopSig, Err: err}, false
			}
			return Handler{}, Result{Code: 1, Err: err}, false
		case o := <-done:
			if stopSig != nil {
				return Handler{}, Result{Code: 128 + signum(stopSig), Signal: stopSig}, false
			}
			if s.ctx.Err() != nil {
				return Handler{}, Result{Code: 1, Err: fmt.Errorf("bootstrap stopped: %w", s.ctx.Err())}, false
			}
			if o.err != nil {
				s.state.SetPhase(health.PhaseFailed, o.err.Error())
				return Handler{}, Result{Code: 1, Err: fmt.Errorf("bootstrap: %w", o.err)}, false
			}
			if len(o.h.Argv) == 0 {
				err := errors.New("bootstrap returned no handler command ([run].command is empty and nothing follows --)")
				s.state.SetPhase(health.PhaseFailed, err.Error())
				return Handler{}, Result{Code: 2, Err: err}, false
			}
			return o.h, Result{}, true
		}
	}
}

// outcome is how one handler run ended.
type outcome struct {
	status   syscall.WaitStatus
	stopped  bool      // volboot was asked to stop (SIGTERM, SIGINT, ctx)
	signal   os.Signal // the stop signal, if a signal
	ran      time.Duration
	startErr error
}

func (s *supervisor) runOnce(path string, h Handler) outcome {
	env := withoutKey(h.Env, "NOTIFY_SOCKET")
	var notes <-chan notify.Message
	if s.cfg.Ready.Kind == readiness.Notify {
		l, err := notify.Listen(s.cfg.TempDir, s.log)
		if err != nil {
			return outcome{startErr: err}
		}
		defer l.Close()
		env = append(env, "NOTIFY_SOCKET="+l.Path())
		notes = l.C
	}
	files, closeFiles, err := stdioFiles()
	if err != nil {
		return outcome{startErr: err}
	}
	defer closeFiles()
	for _, f := range h.Files {
		files = append(files, f.Fd())
	}
	attr := &syscall.ProcAttr{
		Dir:   h.Dir,
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	started := time.Now()
	pid, exited, err := s.rp.ForkExec(path, h.Argv, attr)
	if err != nil {
		return outcome{startErr: fmt.Errorf("handler %q: %w", h.Argv[0], err)}
	}
	s.state.HandlerStarted(pid)
	s.state.SetPhase(health.PhaseWarmLoading, "")
	s.log.Info("handler started", zap.Int("pid", pid), zap.Strings("argv", h.Argv), zap.String("ready", s.cfg.Ready.String()))

	ready := false
	stopping := false
	markReady := func(how string) {
		if ready {
			return
		}
		ready = true
		if stopping {
			return
		}
		s.state.SetPhase(health.PhaseReady, "")
		s.log.Info("handler ready", zap.String("via", how), zap.Duration("after", time.Since(started).Round(time.Millisecond)))
		s.startAfterReady()
	}

	rctx, rcancel := context.WithCancel(context.Background())
	httpReady := make(chan error, 1)
	pollDone := make(chan struct{})
	defer func() { rcancel(); <-pollDone }()
	switch s.cfg.Ready.Kind {
	case readiness.Started:
		close(pollDone)
		markReady("started")
	case readiness.HTTP:
		go func() {
			defer close(pollDone)
			httpReady <- readiness.PollHTTP(rctx, s.cfg.HTTPClient, s.cfg.Ready.URL, s.cfg.ReadyPoll, s.log)
		}()
	default:
		close(pollDone)
	}

	var readyTimeout <-chan time.Time
	if s.cfg.ReadyTimeout > 0 && !ready {
		t := time.NewTimer(s.cfg.ReadyTimeout)
		defer t.Stop()
		readyTimeout = t.C
	}
	var grace <-chan time.Time
	var o outcome
	stop := func() {
		o.stopped = true
		if !stopping {
			stopping = true
			s.state.SetPhase(health.PhaseStopping, "stop requested")
		}
		if grace == nil {
			grace = time.After(s.cfg.StopGrace)
			s.log.Info("stopping handler", zap.Duration("grace", s.cfg.StopGrace))
		}
	}
	ctxDone := s.ctx.Done()
	for {
		select {
		case sig := <-s.sigs:
			s.log.Info("forwarding signal to handler", zap.String("signal", sig.String()), zap.Int("pgid", pid))
			signalGroup(pid, sig.(syscall.Signal))
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				o.signal = sig
				stop()
			}
		case <-ctxDone:
			ctxDone = nil
			signalGroup(pid, syscall.SIGTERM)
			stop()
		case <-grace:
			s.log.Warn("handler still running after stop grace; killing its process group", zap.Duration("grace", s.cfg.StopGrace))
			signalGroup(pid, syscall.SIGKILL)
			grace = nil
		case m, ok := <-notes:
			if !ok {
				notes = nil
				continue
			}
			// Ready first: entering a phase clears the detail, and
			// "READY=1\nSTATUS=serving" means the status of the ready
			// handler.
			if m.Ready {
				markReady("notify")
			}
			if m.HasStatus {
				s.log.Info("handler status", zap.String("status", m.Status))
				s.state.SetDetail(m.Status)
			}
			if m.Stopping && !stopping {
				stopping = true
				s.log.Info("handler is stopping (STOPPING=1)")
				s.state.SetPhase(health.PhaseStopping, "handler sent STOPPING=1")
			}
		case err := <-httpReady:
			if err == nil {
				markReady(s.cfg.Ready.URL)
			}
		case <-readyTimeout:
			if !ready && !stopping {
				s.log.Error("handler not ready within the readiness timeout; worker marked unhealthy",
					zap.Duration("timeout", s.cfg.ReadyTimeout), zap.String("ready", s.cfg.Ready.String()))
				s.state.SetPhase(health.PhaseUnhealthy, fmt.Sprintf("not ready within %s", s.cfg.ReadyTimeout))
				// Still accept a late READY: the handler may recover
				// before the platform acts on the 503.
			}
		case ws := <-exited:
			o.status = ws
			o.ran = time.Since(started)
			// Leftovers of the group would outlive their leader; see
			// the package comment.
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			if n := killDescendants(); n > 0 {
				s.log.Info("killed the handler's remaining descendants", zap.Int("count", n))
			}
			s.log.Info("handler exited", zap.String("status", reaper.Describe(ws)), zap.Duration("ran", o.ran.Round(time.Millisecond)))
			return o
		}
	}
}

// killDescendants sends SIGKILL to every process descended from this one
// and reports how many it found. It runs once the handler has exited, when
// every descendant is the handler's: those that left its process group
// (setsid, a daemon's double fork) were adopted by us as subreaper or PID 1
// when their parents died, and would otherwise outlive the handler, holding
// GPU memory and ports. It looks again for a few rounds, for children
// forked while it killed.
func killDescendants() int {
	killed := map[int]bool{}
	for range 3 {
		fresh := 0
		for _, pid := range descendants(os.Getpid()) {
			if !killed[pid] {
				killed[pid] = true
				fresh++
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if fresh == 0 {
			break
		}
	}
	return len(killed)
}

// descendants lists the processes below root, from /proc (zombies
// included: killing one is harmless, and the reaper collects it).
func descendants(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parens.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// stdioFiles is volboot's own fds 0, 1 and 2 for the handler to inherit;
// one that is closed (volboot started with <&- or >&-) is replaced by
// /dev/null, since the exec would otherwise fail with EBADF.
func stdioFiles() ([]uintptr, func(), error) {
	files := []uintptr{0, 1, 2}
	var opened []*os.File
	closeAll := func() {
		for _, f := range opened {
			f.Close()
		}
	}
	for fd := range files {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			continue
		}
		f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("replacing closed fd %d with %s: %w", fd, os.DevNull, err)
		}
		opened = append(opened, f)
		files[fd] = f.Fd()
	}
	return files, closeAll, nil
}

// signalGroup sends sig to the handler's process group, or to the handler
// alone if it has left the group (setsid) and the group is empty.
func signalGroup(pgid int, sig syscall.Signal) {
	if err := syscall.Kill(-pgid, sig); errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(pgid, sig)
	}
}

// sleep waits d unless a signal or ctx ends it first; stopped reports that.
func (s *supervisor) sleep(d time.Duration) (os.Signal, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil, false
	case sig := <-s.sigs:
		s.log.Warn("signal while waiting to restart the handler; exiting", zap.String("signal", sig.String()))
		return sig, true
	case <-s.ctx.Done():
		return nil, true
	}
}

// linger keeps serving /ping 503 for FailureLinger, ending early on a
// signal or ctx.
func (s *supervisor) linger() {
	if s.cfg.FailureLinger <= 0 {
		return
	}
	t := time.NewTimer(s.cfg.FailureLinger)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.sigs:
	case <-s.ctx.Done():
	}
}

func signum(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 0
}

func withoutKey(env []string, key string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// lookPath resolves argv[0] against the PATH in env (the handler's), not
// volboot's own: "python" must mean the generation's python.
func lookPath(argv []string, env []string) (string, error) {
	if len(argv) == 0 || argv[0] == "" {
		return "", errors.New("handler command is empty")
	}
	name := argv[0]
	if strings.Contains(name, "/") {
		if err := executable(name); err != nil {
			return "", fmt.Errorf("handler command %q: %w", name, err)
		}
		return name, nil
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("handler command %q not found in the handler's PATH %q: %w", name, path, syscall.ENOENT)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file: %w", p, syscall.EACCES)
	}
	return nil
}
