package mfsrig

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The proxies run in processes of their own, never in the process that
// uses the mounts: a Go process that starts a program from a FUSE mount
// holds one of its Ps through the vfork until the kernel has the program's
// path and file from mfsmount, and a garbage collection that begins
// meanwhile stops the whole process; a proxy in that process could then not
// carry mfsmount's question to the master, and the exec, the collection and
// every test would wait until mfsmount gave up (minutes later, with EIO).
// The rig starts them by running its own executable with envProxy set;
// this package's init turns such a process into a proxy.

// envProxy carries "listen-address upstream-address rtt" to a proxy process.
const envProxy = "VOLBOOT_MFSRIG_PROXY"

func init() {
	if spec := os.Getenv(envProxy); spec != "" {
		os.Exit(proxyMain(spec, os.Stdin, os.Stdout))
	}
}

// proxyMain runs a Proxy and obeys one command per line of in ("rtt
// DURATION", "cut", "heal"), answering each on out with "ok" or "error:
// ..."; it ends when in does.
func proxyMain(spec string, in io.Reader, out io.Writer) int {
	f := strings.Fields(spec)
	if len(f) != 3 {
		fmt.Fprintf(out, "error: %s=%q: want listen, upstream and rtt\n", envProxy, spec)
		return 2
	}
	rtt, err := time.ParseDuration(f[2])
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return 2
	}
	p, err := NewProxy(f[0], f[1], rtt)
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return 1
	}
	defer p.Close()
	fmt.Fprintf(out, "listening %s\n", p.Addr())
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch cmd {
		case "rtt":
			d, err := time.ParseDuration(arg)
			if err != nil {
				fmt.Fprintf(out, "error: %v\n", err)
				continue
			}
			p.SetRTT(d)
		case "cut":
			p.Cut(true)
		case "heal":
			p.Cut(false)
		default:
			fmt.Fprintf(out, "error: unknown command %q\n", cmd)
			continue
		}
		fmt.Fprintln(out, "ok")
	}
	return 0
}

// ProxyProcess is a Proxy running in a child process, controlled through
// its standard input. Its methods are safe for concurrent use.
type ProxyProcess struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	addr string
	port int
	rtt  time.Duration
	done chan struct{}
}

// StartProxyProcess starts a proxy process listening on listen (port 0
// for any) and forwarding to upstream at rtt.
func StartProxyProcess(ctx context.Context, listen, upstream string, rtt time.Duration) (*ProxyProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("latency proxy: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s", envProxy, listen, upstream, rtt))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("latency proxy: start %s: %w", self, err)
	}
	p := &ProxyProcess{cmd: cmd, in: in, out: bufio.NewReader(outPipe), rtt: rtt, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	line, err := p.readLine(ctx)
	if err != nil {
		p.Close()
		return nil, err
	}
	addr, ok := strings.CutPrefix(line, "listening ")
	if !ok {
		p.Close()
		return nil, fmt.Errorf("latency proxy: %s", line)
	}
	p.addr = addr
	if _, err := fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &p.port); err != nil {
		p.Close()
		return nil, fmt.Errorf("latency proxy: address %q: %w", addr, err)
	}
	return p, nil
}

// readLine reads the proxy's next line; ctx bounds the wait.
func (p *ProxyProcess) readLine(ctx context.Context) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := p.out.ReadString('\n')
		ch <- res{strings.TrimSpace(s), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return "", fmt.Errorf("latency proxy: %w", r.err)
		}
		return r.s, nil
	case <-ctx.Done():
		return "", fmt.Errorf("latency proxy: no answer: %w", ctx.Err())
	}
}

// command sends one command and waits for its answer. A proxy that fails
// to obey breaks the test's premise, so failures panic with the reason.
func (p *ProxyProcess) command(c string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.in, c); err != nil {
		panic(fmt.Sprintf("latency proxy: %s: %v", c, err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	line, err := p.readLine(ctx)
	if err == nil && line != "ok" {
		err = errors.New(line)
	}
	if err != nil {
		panic(fmt.Sprintf("latency proxy: %s: %v", c, err))
	}
}

// Port is the port clients connect to on the listen address.
func (p *ProxyProcess) Port() int { return p.port }

// SetRTT changes the round-trip time.
func (p *ProxyProcess) SetRTT(rtt time.Duration) {
	p.command("rtt " + rtt.String())
	p.mu.Lock()
	p.rtt = rtt
	p.mu.Unlock()
}

// RTT is the round-trip time last set.
func (p *ProxyProcess) RTT() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rtt
}

// Cut partitions (true) or heals (false) the link; see Proxy.Cut.
func (p *ProxyProcess) Cut(on bool) {
	if on {
		p.command("cut")
	} else {
		p.command("heal")
	}
}

// Close ends the proxy process and every connection through it.
func (p *ProxyProcess) Close() error {
	p.in.Close()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}
