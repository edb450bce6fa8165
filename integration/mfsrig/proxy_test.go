package mfsrig

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers each line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestProxyDelaysAndCuts: a request and its reply through the proxy take
// at least the round-trip time; while cut nothing comes back, and what was
// held arrives in order once healed.
func TestProxyDelaysAndCuts(t *testing.T) {
	p, err := NewProxy("127.0.0.1:0", echoServer(t), 40*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	ask := func(s string) (string, time.Duration) {
		start := time.Now()
		if _, err := io.WriteString(c, s+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return got, time.Since(start)
	}
	if got, d := ask("one"); got != "one\n" || d < 40*time.Millisecond {
		t.Fatalf("through a 40 ms proxy: %q after %s", got, d)
	}
	p.Cut(true)
	for _, s := range []string{"two\n", "three\n"} {
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if got, err := r.ReadString('\n'); err == nil {
		t.Fatalf("a reply (%q) crossed a cut link", got)
	}
	c.SetReadDeadline(time.Time{})
	p.Cut(false)
	for _, want := range []string{"two\n", "three\n"} {
		if got, err := r.ReadString('\n'); err != nil || got != want {
			t.Fatalf("after healing: %q, %v; want %q", got, err, want)
		}
	}
	p.SetRTT(0)
	if got, _ := ask("four"); got != "four\n" {
		t.Fatalf("at 0 RTT: %q", got)
	}
}
