// Package mfsrig starts a real MooseFS on this machine for tests and
// benchmarks: a master and a chunkserver from Debian's moosefs packages in a
// network namespace of their own, and any number of mfsmount clients in the
// test's namespace, each talking to the master through its own latency
// proxy (a process of its own: see proxyproc.go for why). Metadata operations (every create, stat, rename, link, unlink) then
// pay a network round trip, as on RunPod's volumes, while chunk data flows
// straight to the chunkserver over a veth pair. Two clients of one rig are
// two hosts sharing one volume: each has its own kernel mount, its own
// master session and its own caches.
//
// # Why a namespace
//
// mfsmaster refuses to serve from a loopback address, so it and the
// chunkserver listen on the namespace's end of a veth pair, an address of the
// rig's own /30 in 10.251.0.0/16; nothing else is ever addressed.
//
// # Faults
//
// Client.Proxy cuts one client off from the master (Proxy.Cut) or slows it
// (Proxy.SetRTT) without touching the others; StopChunkserver and
// StartChunkserver take the data server away during writes; KillClient kills
// a client's mfsmount as a dying host would, leaving behind whatever its
// master session held (flock locks linger then).
//
// # Requirements and cleanup
//
// Root, /dev/fuse, ip(8) and the moosefs-master, moosefs-chunkserver and
// moosefs-client packages; Available says which is missing. Every process the
// rig starts dies with the process that started it (SIGKILL on parent death),
// and Close removes the mounts, the namespace and the rig's directory. A rig
// left behind by a killed test run is removed by the next Start on this
// machine (namespaces and directories carry the pid of their owner).
package mfsrig

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Options configures Start.
type Options struct {
	// Dir is where the rig's working directory (configuration, metadata,
	// chunks, mount points) is made; "" means os.TempDir(). It must be on a
	// local filesystem with a few hundred MB free.
	Dir string
	// Clients is the number of mounts made at start (default 2).
	Clients int
	// RTT is each client's round-trip time to the master (default 2 ms).
	RTT time.Duration
	// MountOptions are extra mfsmount -o options for the clients made at
	// start.
	MountOptions []string
	// Logf receives progress and the servers' complaints; nil is silent.
	Logf func(format string, args ...any)
}

// Rig is a running MooseFS. Its methods are safe for concurrent use.
type Rig struct {
	o      Options
	dir    string
	ns     string
	hostIf string
	hostIP string
	nsIP   string
	id     int

	mu      sync.Mutex
	master  *server
	chunk   *server
	clients []*Client
	closed  bool
}

// Client is one mount of the rig's filesystem.
type Client struct {
	// Mount is the mount point.
	Mount string
	// Proxy carries this client's traffic to the master.
	Proxy *ProxyProcess

	rig  *Rig
	opts []string
	mu   sync.Mutex
	proc *server // mfsmount -f
}

// DefaultRTT is the round-trip time of a client to the master unless
// Options.RTT says otherwise: RunPod's volumes answer metadata operations in
// about this time.
const DefaultRTT = 2 * time.Millisecond

// namePrefix starts every namespace and directory a rig makes; the owner's
// pid follows it.
const namePrefix = "volboot-mfsrig-"

// nsPrefix is the namespace name's prefix (ip-netns names are file names).
const nsPrefix = "vbmfs-"

// Available reports why a rig cannot start on this machine, or nil.
func Available() error {
	var missing []string
	if os.Geteuid() != 0 {
		return errors.New("the MooseFS rig needs root (network namespaces, mounts)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("the MooseFS rig needs FUSE: %w", err)
	}
	for _, b := range []string{"ip", "mfsmaster", "mfschunkserver", "mfsmount"} {
		if _, err := lookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the MooseFS rig needs %s on PATH (apt-get install iproute2 moosefs-master moosefs-chunkserver moosefs-client)", strings.Join(missing, ", "))
	}
	return nil
}

// lookPath finds a program on PATH or in the sbin directories, which a
// root shell has but a test's environment may lack.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}

var rigCount struct {
	sync.Mutex
	n int
}

// Start brings up a MooseFS and mounts o.Clients clients. On error nothing
// it started is left running. ctx bounds the start only.
func Start(ctx context.Context, o Options) (*Rig, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if o.Clients <= 0 {
		o.Clients = 2
	}
	if o.RTT <= 0 {
		o.RTT = DefaultRTT
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Dir == "" {
		o.Dir = os.TempDir()
	}
	removeStale(o.Logf)
	rigCount.Lock()
	rigCount.n++
	n := rigCount.n
	rigCount.Unlock()
	pid := os.Getpid()
	dir, err := os.MkdirTemp(o.Dir, fmt.Sprintf("%s%d-", namePrefix, pid))
	if err != nil {
		return nil, fmt.Errorf("MooseFS rig: %w", err)
	}
	r := &Rig{o: o, dir: dir, id: n,
		ns:     fmt.Sprintf("%s%d-%d", nsPrefix, pid, n),
		hostIf: fmt.Sprintf("vbm%dh%d", pid, n)}
	if err := r.start(ctx); err != nil {
		r.Close()
		return nil, fmt.Errorf("MooseFS rig: %w (its logs are in %s until the rig is closed)", err, dir)
	}
	return r, nil
}

func (r *Rig) start(ctx context.Context) error {
	if err := r.network(); err != nil {
		return err
	}
	if err := r.writeConfig(); err != nil {
		return err
	}
	var err error
	if r.master, err = r.startServer("master", "mfsmaster", "-f", "-c", filepath.Join(r.dir, "mfsmaster.cfg")); err != nil {
		return err
	}
	if err := r.waitListen(ctx, r.master, net.JoinHostPort(r.nsIP, "9421")); err != nil {
		return err
	}
	if err := r.StartChunkserver(); err != nil {
		return err
	}
	if err := r.waitListen(ctx, r.chunk, net.JoinHostPort(r.nsIP, "9422")); err != nil {
		return err
	}
	for i := 0; i < r.o.Clients; i++ {
		if _, err := r.AddClient(ctx, r.o.MountOptions...); err != nil {
			return err
		}
	}
	// Writes need the chunkserver registered with the master: until then
	// the filesystem reports no space.
	c := r.clients[0]
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(c.Mount, &st); err == nil && st.Blocks > 0 {
			break
		}
		if err := r.chunk.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the chunkserver did not register with the master: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Deleted files stay in MooseFS's trash for a day by default, holding
	// their chunks; a test rig has no use for them.
	if p, err := lookPath("mfssettrashtime"); err == nil {
		if out, err := exec.Command(p, "0", c.Mount).CombinedOutput(); err != nil {
			r.o.Logf("mfssettrashtime 0 %s: %v: %s", c.Mount, err, out)
		}
	}
	r.o.Logf("MooseFS rig up in %s: master %s in namespace %s, %d clients at %s RTT", r.dir, r.nsIP, r.ns, len(r.clients), r.o.RTT)
	return nil
}

// network makes the namespace and a veth pair with a /30 of its own.
func (r *Rig) network() error {
	a, err := freeSubnet()
	if err != nil {
		return err
	}
	r.hostIP = fmt.Sprintf("10.251.%d.%d", a>>8, a&0xff+1)
	r.nsIP = fmt.Sprintf("10.251.%d.%d", a>>8, a&0xff+2)
	nsIf := "eth0"
	steps := [][]string{
		{"netns", "add", r.ns},
		{"link", "add", r.hostIf, "type", "veth", "peer", "name", nsIf, "netns", r.ns},
		{"addr", "add", r.hostIP + "/30", "dev", r.hostIf},
		{"link", "set", r.hostIf, "up"},
		{"-n", r.ns, "addr", "add", r.nsIP + "/30", "dev", nsIf},
		{"-n", r.ns, "link", "set", nsIf, "up"},
		{"-n", r.ns, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// freeSubnet picks the low 16 bits of a /30 in 10.251.0.0/16 that no
// interface on this host uses.
func freeSubnet() (int, error) {
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		return 0, fmt.Errorf("ip addr show: %w", err)
	}
	used := map[int]bool{}
	for _, f := range strings.Fields(string(out)) {
		ip, _, ok := strings.Cut(f, "/")
		if !ok || !strings.HasPrefix(ip, "10.251.") {
			continue
		}
		if p := net.ParseIP(ip).To4(); p != nil {
			used[(int(p[2])<<8|int(p[3]))&^3] = true
		}
	}
	start := (os.Getpid() * 4) & 0xfffc
	for i := 0; i < 1<<14; i++ {
		a := (start + 4*i) & 0xfffc
		if a != 0 && !used[a] {
			return a, nil
		}
	}
	return 0, errors.New("no free /30 left in 10.251.0.0/16")
}

// emptyMetadata is what a master's metadata file holds before its first
// start (Debian ships it as metadata.mfs.empty).
var emptyMetadata = []byte("MFSM NEW")

func (r *Rig) writeConfig() error {
	for _, d := range []string{"master", "chunkserver", "chunks"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{
		"mfsmaster.cfg": fmt.Sprintf(`WORKING_USER = root
WORKING_GROUP = root
DATA_PATH = %[1]s/master
EXPORTS_FILENAME = %[1]s/mfsexports.cfg
TOPOLOGY_FILENAME = %[1]s/mfstopology.cfg
MATOML_LISTEN_HOST = %[2]s
MATOCS_LISTEN_HOST = %[2]s
MATOCL_LISTEN_HOST = %[2]s
NICE_LEVEL = 0
`, r.dir, r.nsIP),
		"mfsexports.cfg":  "* / rw,alldirs,admin,maproot=0:0\n",
		"mfstopology.cfg": "",
		"mfschunkserver.cfg": fmt.Sprintf(`WORKING_USER = root
WORKING_GROUP = root
DATA_PATH = %[1]s/chunkserver
HDD_CONF_FILENAME = %[1]s/mfshdd.cfg
HDD_LEAVE_SPACE_DEFAULT = 128MiB
MASTER_HOST = %[2]s
BIND_HOST = %[2]s
CSSERV_LISTEN_HOST = %[2]s
MASTER_RECONNECTION_DELAY = 1
NICE_LEVEL = 0
`, r.dir, r.nsIP),
		"mfshdd.cfg": r.dir + "/chunks\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(r.dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(r.dir, "master", "metadata.mfs"), emptyMetadata, 0o644)
}

// server is one process the rig started and waits for.
type server struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set before done closes
}

func (s *server) exited() error {
	select {
	case <-s.done:
		tail, _ := os.ReadFile(s.log)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("%s exited (%v): %s", s.name, s.err, bytes.TrimSpace(tail))
	default:
		return nil
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (s *server) stop(grace time.Duration) {
	if s == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

// startServer runs argv inside the namespace (netns) or in ours.
func (r *Rig) startServer(name string, argv ...string) (*server, error) {
	return r.spawn(name, true, argv...)
}

func (r *Rig) spawn(name string, inNS bool, argv ...string) (*server, error) {
	bin, err := lookPath(argv[0])
	if err != nil {
		return nil, err
	}
	argv[0] = bin
	if inNS {
		ip, err := lookPath("ip")
		if err != nil {
			return nil, err
		}
		argv = append([]string{ip, "netns", "exec", r.ns}, argv...)
	}
	logPath := filepath.Join(r.dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that stop reaches whatever it forks; and
	// killed with us, so that a dead test leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	return s, nil
}

// waitListen waits until addr accepts connections from our namespace.
func (r *Rig) waitListen(ctx context.Context, s *server, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if err := s.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s does not listen on %s: %w", s.name, addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StartChunkserver starts the chunkserver (again). The rig starts it once
// by itself.
func (r *Rig) StartChunkserver() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.chunk != nil && r.chunk.exited() == nil {
		return nil
	}
	s, err := r.startServer("chunkserver", "mfschunkserver", "-f", "-c", filepath.Join(r.dir, "mfschunkserver.cfg"))
	if err != nil {
		return err
	}
	r.chunk = s
	return nil
}

// StopChunkserver kills the chunkserver (SIGKILL: no goodbye to the master),
// as a crashed or partitioned data server; reads and writes of file data
// then wait or fail while metadata operations go on.
func (r *Rig) StopChunkserver() {
	r.mu.Lock()
	s := r.chunk
	r.mu.Unlock()
	if s != nil {
		s.stop(0)
	}
}

// Clients are the rig's mounts, in the order they were made.
func (r *Rig) Clients() []*Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Client(nil), r.clients...)
}

// Dir is the rig's working directory (logs of every server and client).
func (r *Rig) Dir() string { return r.dir }

// MasterAddr is the master's client port, reachable without a proxy.
func (r *Rig) MasterAddr() string { return net.JoinHostPort(r.nsIP, "9421") }

// AddClient mounts the filesystem once more, through a proxy of its own at
// the rig's RTT, with extra mfsmount -o options (such as "mfsnobsdlocks").
func (r *Rig) AddClient(ctx context.Context, opts ...string) (*Client, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("MooseFS rig is closed")
	}
	i := len(r.clients)
	mnt := filepath.Join(r.dir, fmt.Sprintf("mnt%d", i))
	r.mu.Unlock()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	p, err := StartProxyProcess(ctx, "127.0.0.1:0", r.MasterAddr(), r.o.RTT)
	if err != nil {
		return nil, err
	}
	c := &Client{Mount: mnt, Proxy: p, rig: r, opts: opts}
	r.mu.Lock()
	r.clients = append(r.clients, c)
	r.mu.Unlock()
	if err := c.mount(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// mount starts mfsmount in the foreground and waits for the mount.
func (c *Client) mount(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	argv := []string{"mfsmount", "-f", "-H", "127.0.0.1", "-P", strconv.Itoa(c.Proxy.Port())}
	for _, o := range c.opts {
		argv = append(argv, "-o", o)
	}
	argv = append(argv, c.Mount)
	s, err := c.rig.spawn("mfsmount-"+filepath.Base(c.Mount), false, argv...)
	if err != nil {
		return err
	}
	c.proc = s
	for !mounted(c.Mount) {
		if err := s.exited(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			s.stop(time.Second)
			return fmt.Errorf("mfsmount %s: not mounted: %w", c.Mount, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// mounted reports whether a FUSE filesystem is mounted at dir.
func mounted(dir string) bool {
	for _, m := range mountTable() {
		if m.point == dir && strings.HasPrefix(m.fstype, "fuse") {
			return true
		}
	}
	return false
}

type mountEntry struct{ source, point, fstype string }

func mountTable() []mountEntry {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 3 {
			out = append(out, mountEntry{source: fs[0], point: unescapeMount(fs[1]), fstype: fs[2]})
		}
	}
	return out
}

// unescapeMount undoes /proc/mounts' octal escapes (space, tab, newline,
// backslash).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Kill kills this client's mfsmount with SIGKILL, as a host dies: its
// master session (and whatever locks it held) stays behind until the
// master times it out, and the mount point answers ENOTCONN until Remount.
func (c *Client) Kill() {
	c.mu.Lock()
	s := c.proc
	c.mu.Unlock()
	if s != nil {
		s.stop(0)
	}
}

// Remount unmounts whatever is left of this client and mounts it again: a
// host that came back.
func (c *Client) Remount(ctx context.Context) error {
	c.unmount()
	return c.mount(ctx)
}

func (c *Client) unmount() {
	c.mu.Lock()
	s := c.proc
	c.mu.Unlock()
	if mounted(c.Mount) {
		if out, err := exec.Command("umount", "-l", c.Mount).CombinedOutput(); err != nil {
			c.rig.o.Logf("umount -l %s: %v: %s", c.Mount, err, out)
		}
	}
	// Unmounted, its file data is flushed (mfsmount syncs before each
	// close): nothing is lost by not waiting for a clean exit.
	s.stop(500 * time.Millisecond)
}

// LogTails returns the last n lines of every server's and client's log,
// for a failed test to show what MooseFS said.
func (r *Rig) LogTails(n int) string {
	logs, _ := filepath.Glob(filepath.Join(r.dir, "*.log"))
	var b strings.Builder
	for _, p := range logs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "== %s\n%s\n", filepath.Base(p), strings.Join(lines, "\n"))
	}
	return b.String()
}

// Close unmounts every client and stops the servers, the proxies and the
// namespace, then removes the rig's directory. It is safe to call twice.
func (r *Rig) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	clients := r.clients
	r.mu.Unlock()
	for _, c := range clients {
		if c.proc != nil {
			c.unmount()
		}
		c.Proxy.Close()
	}
	// The rig's data goes with its directory: no server needs to save it.
	r.chunk.stop(0)
	r.master.stop(0)
	var errs []error
	if out, err := exec.Command("ip", "netns", "del", r.ns).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("No such file")) {
		errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", r.ns, err, bytes.TrimSpace(out)))
	}
	if err := os.RemoveAll(r.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeStale removes what rigs of dead processes left: mounts, servers
// still running in their namespaces, the namespaces and the directories.
func removeStale(logf func(string, ...any)) {
	dead := func(name, prefix string) bool {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			return false
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 {
			return false
		}
		return syscall.Kill(pid, 0) == syscall.ESRCH
	}
	for _, m := range mountTable() {
		if dead(filepath.Base(filepath.Dir(m.point)), namePrefix) {
			logf("removing a dead MooseFS rig's mount %s", m.point)
			_ = exec.Command("umount", "-l", m.point).Run()
		}
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			fs := strings.Fields(line)
			if len(fs) == 0 || !dead(fs[0], nsPrefix) {
				continue
			}
			logf("removing a dead MooseFS rig's namespace %s", fs[0])
			if pids, err := exec.Command("ip", "netns", "pids", fs[0]).Output(); err == nil {
				for _, p := range strings.Fields(string(pids)) {
					if pid, err := strconv.Atoi(p); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			_ = exec.Command("ip", "netns", "del", fs[0]).Run()
		}
	}
	for _, d := range []string{os.TempDir()} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.IsDir() && dead(e.Name(), namePrefix) {
				_ = os.RemoveAll(filepath.Join(d, e.Name()))
			}
		}
	}
}
