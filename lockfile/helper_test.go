package lockfile

// Real-process helpers: the test binary re-executes itself with
// VOLBOOT_LOCKFILE_HELPER=<role> and LF_* settings in its environment.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

const helperEnv = "VOLBOOT_LOCKFILE_HELPER"

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role))
	}
	os.Exit(m.Run())
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			panic(fmt.Sprintf("%s=%q: %v", name, v, err))
		}
		return d
	}
	return def
}

func helperOptions(log *zap.Logger) Options {
	return Options{
		Dir:         os.Getenv("LF_DIR"),
		Logger:      log,
		Identity:    Identity{Host: os.Getenv("LF_HOST")},
		Mode:        Mode(os.Getenv("LF_MODE")),
		TTL:         envDuration("LF_TTL", 10*time.Second),
		Heartbeat:   envDuration("LF_HB", 200*time.Millisecond),
		PollMin:     envDuration("LF_POLLMIN", 10*time.Millisecond),
		PollMax:     envDuration("LF_POLLMAX", 100*time.Millisecond),
		WaitTimeout: envDuration("LF_TIMEOUT", 40*time.Second),
		LogEvery:    envDuration("LF_LOGEVERY", 100*time.Millisecond),
		Phase:       os.Getenv("LF_PHASE"),
	}
}

// appendLine appends one line with a single write(2) on an O_APPEND file, so
// concurrent appenders never interleave within a line.
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(line + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func runHelper(role string) int {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zapcore.DebugLevel)
	cfg.Sampling = nil
	cfg.OutputPaths = []string{"stderr"}
	log, err := cfg.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer log.Sync()
	var outMu sync.Mutex
	out := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	ctx := context.Background()
	pid := os.Getpid()
	switch role {
	case "contend":
		iter, _ := strconv.Atoi(os.Getenv("LF_ITER"))
		logPath, seqPath := os.Getenv("LF_LOG"), os.Getenv("LF_RES")
		for i := 0; i < iter; i++ {
			l, err := Acquire(ctx, helperOptions(log))
			if err != nil {
				fmt.Fprintln(os.Stderr, "acquire:", err)
				return 2
			}
			b, err := os.ReadFile(seqPath)
			if err != nil && !os.IsNotExist(err) {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			n++
			if err := appendLine(logPath, fmt.Sprintf("enter %d %d %d", pid, n, l.Epoch())); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			time.Sleep(2 * time.Millisecond)
			if err := l.Check(); err != nil {
				fmt.Fprintln(os.Stderr, "check:", err)
				return 3
			}
			if err := atomicfile.Write(seqPath, []byte(strconv.Itoa(n)), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			if err := appendLine(logPath, fmt.Sprintf("leave %d %d %d", pid, n, l.Epoch())); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			if err := l.Release(); err != nil {
				fmt.Fprintln(os.Stderr, "release:", err)
				return 3
			}
		}
		return 0

	case "hold":
		out("started %d", pid)
		l, err := Acquire(ctx, helperOptions(log))
		if err != nil {
			out("error %v", err)
			return 2
		}
		out("acquired %d %s", l.Epoch(), l.HolderID())
		go func() {
			<-l.Lost()
			out("lost %v", l.Err())
		}()
		res := os.Getenv("LF_RES")
		writes := 0
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmd := sc.Text()
			switch {
			case cmd == "w":
				if err := l.Check(); err != nil {
					out("refused %v", err)
					return 3
				}
				writes++
				if err := appendLine(res, fmt.Sprintf("write %d %d %d", pid, l.Epoch(), writes)); err != nil {
					out("error %v", err)
					return 2
				}
				out("wrote %d", writes)
			case strings.HasPrefix(cmd, "phase "):
				l.SetPhase(strings.TrimPrefix(cmd, "phase "))
				out("ok")
			case cmd == "release":
				err := l.Release()
				out("released %v", err)
				if err != nil {
					return 3
				}
				return 0
			}
		}
		if err := l.Release(); err != nil {
			return 3
		}
		return 0

	case "lease":
		ls, err := HoldLease(ctx, LeaseOptions{
			Dir: os.Getenv("LF_DIR"), WorkerID: os.Getenv("LF_WORKER"), Generation: os.Getenv("LF_GEN"),
			Logger: log, Identity: Identity{Host: os.Getenv("LF_HOST")},
			Heartbeat: envDuration("LF_HB", 100*time.Millisecond),
		})
		if err != nil {
			out("error %v", err)
			return 2
		}
		out("leased %s", ls.Path())
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
		}
		if err := ls.Release(); err != nil {
			return 3
		}
		return 0

	case "churn":
		// Rewrites the holder record and a lease as fast as it can, for
		// the torn-read test.
		o := helperOptions(log)
		o.Heartbeat = time.Millisecond
		l, err := Acquire(ctx, o)
		if err != nil {
			out("error %v", err)
			return 2
		}
		ls, err := HoldLease(ctx, LeaseOptions{Dir: o.Dir, WorkerID: "churn", Generation: "g1", Logger: log, Heartbeat: time.Millisecond})
		if err != nil {
			out("error %v", err)
			return 2
		}
		stop := make(chan struct{})
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Microsecond):
				}
				l.SetPhase(fmt.Sprintf("downloading torch-2.8.0 (%d%%) %s", i%100, strings.Repeat("x", i%300)))
			}
		}()
		out("acquired %d", l.Epoch())
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
		}
		close(stop)
		if err := ls.Release(); err != nil {
			return 3
		}
		if err := l.Release(); err != nil {
			return 3
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper role", role)
	return 2
}

// proc is a running helper process.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  interface{ Close() error }
	write  func(string)
	lines  chan string
	stderr *syncBuffer
	exited chan struct{}
	code   int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startHelper starts a helper; env holds LF_* settings. The process is
// killed when the test ends, and its stderr shown if the test failed.
func startHelper(t *testing.T, name, role string, env map[string]string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+role)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 1000),
		stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	p.write = func(s string) {
		if _, err := fmt.Fprintln(stdin, s); err != nil {
			t.Errorf("%s: write %q: %v", name, s, err)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		err := cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = 128 + int(ws.Signal())
		}
		_ = err
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s (pid %d) stderr:\n%s", name, cmd.Process.Pid, lastLines(p.stderr.String(), 40))
		}
	})
	return p
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// expect returns the next stdout line starting with prefix, failing the
// test on timeout or exit. Other lines are skipped.
func (p *proc) expect(prefix string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("%s exited before printing %q", p.name, prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			p.t.Fatalf("%s did not print %q within %s", p.name, prefix, timeout)
		}
	}
}

// waitStderr waits until stderr contains s.
func (p *proc) waitStderr(s string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.stderr.String(), s) {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not log %q within %s", p.name, s, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	return -1
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}
