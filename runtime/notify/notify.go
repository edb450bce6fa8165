// Package notify receives the systemd notify protocol from a handler: a
// unixgram socket whose path the handler finds in NOTIFY_SOCKET, and
// datagrams of newline-separated KEY=VALUE assignments such as READY=1,
// STATUS=loading model, STOPPING=1.
//
// volboot understands READY, STATUS and STOPPING and ignores every other
// assignment (systemd defines many: MAINPID, WATCHDOG, ERRNO, ...), so a
// handler written for systemd works unchanged. Credentials and file
// descriptors passed with a datagram are not used.
package notify

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Message is what one datagram said. Zero fields mean the datagram did not
// mention them.
type Message struct {
	Ready    bool   // READY=1
	Stopping bool   // STOPPING=1
	Status   string // STATUS=..., free text for humans
	// HasStatus tells an explicit empty STATUS= from no STATUS at all.
	HasStatus bool
}

// maxStatus bounds the status text kept from one datagram; the rest is cut
// (at a rune boundary) because it ends up in /status JSON and logs.
const maxStatus = 1024

// Parse reads one datagram. It never fails: lines without '=', unknown
// keys and values other than "1" for READY and STOPPING are ignored, as
// systemd does; a key given twice takes its last value. Lines may end in
// "\n" or "\r\n". Status text is cut to 1 KiB and invalid UTF-8 in it is
// replaced, so it is always safe to log and to encode as JSON.
func Parse(datagram []byte) Message {
	var m Message
	for len(datagram) > 0 {
		var line []byte
		if i := bytes.IndexByte(datagram, '\n'); i >= 0 {
			line, datagram = datagram[:i], datagram[i+1:]
		} else {
			line, datagram = datagram, nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		key, value, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			continue
		}
		switch string(key) {
		case "READY":
			m.Ready = string(value) == "1"
		case "STOPPING":
			m.Stopping = string(value) == "1"
		case "STATUS":
			m.Status = cleanStatus(value)
			m.HasStatus = true
		}
	}
	return m
}

func cleanStatus(v []byte) string {
	s := string(bytes.ToValidUTF8(v, []byte("\uFFFD")))
	if len(s) <= maxStatus {
		return s
	}
	cut := maxStatus
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// Listener is a bound notify socket in a private temporary directory.
// Messages arrive on C until Close; C is closed when the receiving
// goroutine, which the Listener owns, has ended.
type Listener struct {
	// C delivers parsed datagrams in arrival order. If nobody reads, the
	// receiver blocks and the kernel queues (then drops, as datagrams
	// may be dropped) further messages; it does not spin.
	C <-chan Message

	path string
	dir  string
	conn *net.UnixConn
	stop chan struct{} // closed by Close: unblocks a pending delivery
	done chan struct{}
	once sync.Once
}

// Listen creates a fresh 0700 directory under tmpDir (os.TempDir() when
// empty) and binds a unixgram socket "notify.sock" in it. The socket path
// must fit sun_path (107 bytes); Listen says so, naming the path, when
// tmpDir is too long.
func Listen(tmpDir string, logger *zap.Logger) (*Listener, error) {
	if tmpDir == "" {
		tmpDir = os.TempDir()
	}
	dir, err := os.MkdirTemp(tmpDir, "volboot-notify-")
	if err != nil {
		return nil, fmt.Errorf("notify: creating socket directory: %w", err)
	}
	path := filepath.Join(dir, "notify.sock")
	if len(path) > 107 {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("notify: socket path %q is %d bytes, longer than a unix socket allows (107); set TMPDIR to a shorter directory", path, len(path))
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("notify: binding %s: %w", path, err)
	}
	c := make(chan Message)
	l := &Listener{C: c, path: path, dir: dir, conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	go l.receive(c, logger)
	return l, nil
}

// Path is the socket path to put in the handler's NOTIFY_SOCKET.
func (l *Listener) Path() string { return l.path }

// Close stops receiving, waits for the receiving goroutine and removes the
// socket and its directory. Undelivered messages are dropped. It is
// idempotent and safe to call concurrently with reading C.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		err = l.conn.Close()
		<-l.done
		if rerr := os.RemoveAll(l.dir); rerr != nil && err == nil {
			err = fmt.Errorf("notify: removing %s: %w", l.dir, rerr)
		}
	})
	return err
}

func (l *Listener) receive(c chan<- Message, logger *zap.Logger) {
	defer close(l.done)
	defer close(c)
	// systemd accepts datagrams up to a few KiB in practice; 64 KiB holds
	// any datagram a unix socket delivers by default, so none is cut.
	buf := make([]byte, 64<<10)
	for {
		n, err := l.conn.Read(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				logger.Warn("notify socket receive failed; readiness messages are no longer read", zap.String("socket", l.path), zap.Error(err))
			}
			return
		}
		m := Parse(buf[:n])
		select {
		case c <- m:
		case <-l.stop:
			return
		}
	}
}
