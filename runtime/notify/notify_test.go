package notify

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Message
	}{
		{"READY=1", Message{Ready: true}},
		{"READY=1\n", Message{Ready: true}},
		{"READY=0", Message{}},
		{"READY=yes", Message{}},
		{"STATUS=loading F5-TTS\nREADY=1", Message{Ready: true, Status: "loading F5-TTS", HasStatus: true}},
		{"STATUS=", Message{HasStatus: true}},
		{"STATUS=a=b", Message{Status: "a=b", HasStatus: true}},
		{"STOPPING=1\r\n", Message{Stopping: true}},
		{"MAINPID=42\nWATCHDOG=1\nnonsense\n=1\nREADY=1", Message{Ready: true}},
		{"STATUS=one\nSTATUS=two", Message{Status: "two", HasStatus: true}},
		{"ready=1", Message{}},
		{"", Message{}},
		{"\n\n\n", Message{}},
	} {
		if got := Parse([]byte(tc.in)); got != tc.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseCleansStatus(t *testing.T) {
	m := Parse([]byte("STATUS=bad \xff byte"))
	if !utf8.ValidString(m.Status) || !strings.Contains(m.Status, "\uFFFD") {
		t.Errorf("status %q: invalid UTF-8 not replaced", m.Status)
	}
	long := "STATUS=" + strings.Repeat("é", 2000)
	m = Parse([]byte(long))
	if len(m.Status) > maxStatus || !utf8.ValidString(m.Status) {
		t.Errorf("long status: %d bytes, valid=%v", len(m.Status), utf8.ValidString(m.Status))
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"READY=1", "STATUS=x\nSTOPPING=1", "READY=1\r\nSTATUS=\xff", "=\n=\n", "STATUS=" + strings.Repeat("ü", 600)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := Parse(b)
		if len(m.Status) > maxStatus || !utf8.ValidString(m.Status) {
			t.Fatalf("status not cleaned: %q", m.Status)
		}
		if m.Ready && !bytes.Contains(b, []byte("READY=1")) {
			t.Fatalf("Ready without READY=1 in %q", b)
		}
		if m.Stopping && !bytes.Contains(b, []byte("STOPPING=1")) {
			t.Fatalf("Stopping without STOPPING=1 in %q", b)
		}
		if m.HasStatus != bytes.Contains(b, []byte("STATUS=")) {
			// STATUS= only counts at a line start, so absence of the
			// bytes must mean absence of the field.
			if m.HasStatus {
				t.Fatalf("HasStatus without STATUS= in %q", b)
			}
		}
		if m.Status != "" && !m.HasStatus {
			t.Fatalf("status text without HasStatus")
		}
	})
}

func recv(t *testing.T, l *Listener) Message {
	t.Helper()
	select {
	case m, ok := <-l.C:
		if !ok {
			t.Fatal("listener closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return Message{}
	}
}

// A real python3 process, speaking the protocol as a handler would.
func TestListenerReceivesFromPython(t *testing.T) {
	l, err := Listen(t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fi, err := os.Stat(l.Path()); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v %v", l.Path(), fi, err)
	}
	py := `
import os, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=loading\n", os.environ["NOTIFY_SOCKET"])
s.sendto(b"READY=1\nSTATUS=serving", os.environ["NOTIFY_SOCKET"])
s.sendto(b"STOPPING=1", os.environ["NOTIFY_SOCKET"])
`
	cmd := exec.Command("python3", "-c", py)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+l.Path())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	want := []Message{
		{Status: "loading", HasStatus: true},
		{Ready: true, Status: "serving", HasStatus: true},
		{Stopping: true},
	}
	for i, w := range want {
		if got := recv(t, l); got != w {
			t.Errorf("message %d = %+v, want %+v", i, got, w)
		}
	}
}

func TestCloseRemovesSocketAndEndsChannel(t *testing.T) {
	l, err := Listen(t.TempDir(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	// A message nobody reads must not keep Close waiting.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: l.Path(), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("READY=1")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on an undelivered message")
	}
	if _, err := os.Stat(l.Path()); !os.IsNotExist(err) {
		t.Errorf("socket still exists after Close: %v", err)
	}
	for range l.C {
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestListenRejectsLongPath(t *testing.T) {
	dir := t.TempDir() + "/" + strings.Repeat("d", 100)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(dir, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "TMPDIR") {
		t.Fatalf("err = %v, want advice on TMPDIR", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("left behind %v", entries)
	}
}
