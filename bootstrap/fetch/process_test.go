package fetch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/volboot/volboot/integration/testindex"
)

// childBin is the fetchchild helper, built once (without -race, so its
// memory use is the real program's) in TestMain.
var childBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fetchchild")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	childBin = filepath.Join(dir, "fetchchild")
	cmd := exec.Command(goTool(), "build", "-o", childBin, "./internal/fetchchild")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build fetchchild:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sockBufListener pins the send buffer of accepted connections, so that
// what a killed client loses in flight is bounded by known buffers.
type sockBufListener struct {
	net.Listener
	sndbuf int
}

func (l sockBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetWriteBuffer(l.sndbuf)
		}
	}
	return c, err
}

// killContent calls kill once, from the serving goroutine, when content at
// or beyond offset at is read for sending.
type killContent struct {
	testindex.Content
	mu   sync.Mutex
	at   int64
	kill func()
}

func (k *killContent) arm(at int64, kill func()) {
	k.mu.Lock()
	k.at, k.kill = at, kill
	k.mu.Unlock()
}

func (k *killContent) ReadAt(p []byte, off int64) (int, error) {
	k.mu.Lock()
	if k.kill != nil && off+int64(len(p)) > k.at {
		k.kill()
		k.kill = nil
	}
	k.mu.Unlock()
	return k.Content.ReadAt(p, off)
}

// fastDir is a directory on tmpfs when there is one (the data never needs to
// reach a disk), else the test's temporary directory.
func fastDir(t *testing.T) string {
	if d, err := os.MkdirTemp("/dev/shm", "fetchtest"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return t.TempDir()
}

const (
	killSockBuf = 64 << 10  // SO_SNDBUF on the server, SO_RCVBUF in the child
	killCopyBuf = 256 << 10 // the child's copy buffer (fetch's default)
)

// TestKillResume kills a downloading process with SIGKILL at 22 random
// offsets of a 200 MB file; each next process resumes, the last one
// finishes, and the server never sends more than the file plus what was in
// flight at each kill: the copy buffer plus the two socket buffers (which
// Linux doubles) — "one buffer" per interruption.
func TestKillResume(t *testing.T) {
	const size = 200 << 20
	const kills = 22
	content := &killContent{Content: testindex.NewGenerated(size, 42), at: -1}
	sha, err := testindex.SHA256(content.Content)
	if err != nil {
		t.Fatal(err)
	}
	idx := testindex.New()
	if err := idx.AddFile("/files/big.bin", content); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(idx)
	srv.Listener = sockBufListener{Listener: srv.Listener, sndbuf: killSockBuf}
	srv.Start()
	defer srv.Close()

	dir := fastDir(t)
	dest := filepath.Join(dir, sha+".bin")
	part := PartPath(dest)
	args := []string{"-url", srv.URL + "/files/big.bin", "-sha256", sha, "-size", fmt.Sprint(size),
		"-dest", dest, "-rcvbuf", fmt.Sprint(killSockBuf), "-buffer", fmt.Sprint(killCopyBuf)}

	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	offsets := make([]int64, kills)
	for i := range offsets {
		offsets[i] = 1 + r.Int64N(size-2)
	}
	sort.Slice(offsets, func(i, j int) bool { return offsets[i] < offsets[j] })

	var killedAt []int64
	for _, off := range offsets {
		cmd := exec.Command(childBin, args...)
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The server kills the child itself the moment it reads the
		// content at off to send it: a kill in full flow, at that offset.
		content.arm(off, func() { cmd.Process.Signal(syscall.SIGKILL) })
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
				t.Fatalf("child was not killed at offset %d: %v", off, err)
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("child never reached offset %d", off)
		}
		content.arm(-1, nil)
		if _, err := os.Stat(dest); err == nil {
			t.Fatalf("the final name exists after a kill at %d", off)
		}
		fi, err := os.Stat(part)
		if err != nil {
			t.Fatalf("no part file after the kill at %d: %v", off, err)
		}
		killedAt = append(killedAt, fi.Size())
	}
	cmd := exec.Command(childBin, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("final run: %v\n%s", err, out)
	}
	f, err := os.Open(dest)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		t.Fatalf("final file sha256 %s, want %s", got, sha)
	}
	st := idx.Stats("/files/big.bin")
	excess := st.Bytes - size
	perBuffer := int64(killCopyBuf + 2*killSockBuf + 2*killSockBuf + 8<<10)
	t.Logf("killed at offsets %v", killedAt)
	t.Logf("served %d bytes in %d requests for a %d-byte file: excess %d (%.1f KiB per interruption; bound %d KiB)",
		st.Bytes, st.Requests, size, excess, float64(excess)/kills/1024, perBuffer>>10)
	if excess < 0 || excess > kills*perBuffer {
		t.Fatalf("served %d bytes beyond the file over %d interruptions; bound is %d per interruption", excess, kills, perBuffer)
	}
}

// TestPeakRSS downloads a 2 GiB file in a child process and checks its
// peak RSS stays under 64 MiB. It writes 2 GiB, so it runs only with
// VOLBOOT_FETCH_BIG=1 (make bench sets it; bench/fetch reports the same
// figure).
func TestPeakRSS(t *testing.T) {
	if os.Getenv("VOLBOOT_FETCH_BIG") != "1" {
		t.Skip("set VOLBOOT_FETCH_BIG=1 to download 2 GiB and measure peak RSS")
	}
	const size = 2 << 30
	content := testindex.NewGenerated(size, 7)
	sha, err := testindex.SHA256(content)
	if err != nil {
		t.Fatal(err)
	}
	idx := testindex.New()
	if err := idx.AddFile("/files/huge.bin", content); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(idx)
	defer srv.Close()
	dest := filepath.Join(t.TempDir(), sha+".bin")
	cmd := exec.Command(childBin, "-url", srv.URL+"/files/huge.bin", "-sha256", sha, "-size", fmt.Sprint(size), "-dest", dest, "-hwm")
	cmd.Stderr = os.Stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	// The child's own VmHWM: wait4's ru_maxrss would include this test
	// process's memory, inherited through vfork before the exec.
	var rss int64
	if _, err := fmt.Sscan(string(out), &rss); err != nil {
		t.Fatalf("child printed %q: %v", out, err)
	}
	t.Logf("2 GiB in %v, peak RSS (VmHWM) %.1f MiB", time.Since(start).Round(time.Millisecond), float64(rss)/(1<<20))
	if rss >= 64<<20 {
		t.Fatalf("peak RSS %d bytes, want < 64 MiB", rss)
	}
}

// goTool is the go command that built this test: GOROOT's (empty under
// -trimpath), else the one on PATH.
func goTool() string {
	if r := runtime.GOROOT(); r != "" {
		return filepath.Join(r, "bin", "go")
	}
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}
