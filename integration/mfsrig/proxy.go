package mfsrig

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from a local listener to one upstream
// address, delaying every byte by half the round-trip time in each
// direction, so that each request and reply of a chatty protocol pays the
// whole round trip while bulk transfers still stream (a delay, not a rate
// limit). It can also partition the link: while cut, nothing is delivered
// either way and new connections wait, as packets do on a network that
// drops them and a TCP stack that retransmits; when the cut ends everything
// held is delivered in order. That is what a client sees of a master that
// is unreachable for a while.
//
// A Proxy owns one goroutine per listener and three per connection; Close
// stops them all and closes every connection.
type Proxy struct {
	ln       net.Listener
	upstream string

	oneWay atomic.Int64 // nanoseconds of delay each way
	mu     sync.Mutex
	cut    bool
	healed chan struct{} // closed when the current cut ends
	conns  map[*proxyConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewProxy listens on listenAddr (host:port, port 0 for any) and forwards
// to upstream with the round-trip time rtt.
func NewProxy(listenAddr, upstream string, rtt time.Duration) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("latency proxy for %s: %w", upstream, err)
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[*proxyConn]struct{}{}, healed: make(chan struct{})}
	close(p.healed)
	p.SetRTT(rtt)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() *net.TCPAddr { return p.ln.Addr().(*net.TCPAddr) }

// SetRTT changes the round-trip time; bytes already in flight keep the
// delay they were given.
func (p *Proxy) SetRTT(rtt time.Duration) { p.oneWay.Store(int64(rtt / 2)) }

// RTT is the current round-trip time.
func (p *Proxy) RTT() time.Duration { return 2 * time.Duration(p.oneWay.Load()) }

// Cut partitions (true) or heals (false) the link.
func (p *Proxy) Cut(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.cut {
		return
	}
	p.cut = on
	if on {
		p.healed = make(chan struct{})
	} else {
		close(p.healed)
	}
}

// waitHealed returns once the link is not cut, or false when the proxy
// closes first.
func (p *Proxy) waitHealed(stop <-chan struct{}) bool {
	p.mu.Lock()
	h := p.healed
	p.mu.Unlock()
	select {
	case <-h:
		return true
	case <-stop:
		return false
	}
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[*proxyConn]struct{}{}
	p.mu.Unlock()
	err := p.ln.Close()
	for c := range conns {
		c.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c := &proxyConn{p: p, down: down, stop: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			down.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go c.run()
	}
}

// proxyConn is one client connection and its upstream twin.
type proxyConn struct {
	p        *Proxy
	down, up net.Conn
	stop     chan struct{}
	once     sync.Once
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		close(c.stop)
		c.down.Close()
		if c.up != nil {
			c.up.Close()
		}
	})
}

func (c *proxyConn) run() {
	defer c.p.wg.Done()
	defer func() {
		c.close()
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	}()
	// A partitioned network answers no SYN: the connection waits.
	if !c.p.waitHealed(c.stop) {
		return
	}
	up, err := net.DialTimeout("tcp", c.p.upstream, 5*time.Second)
	if err != nil {
		return
	}
	c.up = up
	select {
	case <-c.stop: // closed while dialling
		up.Close()
		return
	default:
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.pump(c.up, c.down) }()
	go func() { defer wg.Done(); c.pump(c.down, c.up) }()
	wg.Wait()
}

// segment is bytes read at one moment, due for delivery at due.
type segment struct {
	due  time.Time
	data []byte
	eof  bool
}

// pump copies src to dst through a delay line: the reader stamps each read
// with its delivery time, the writer (this goroutine) sleeps until then and
// until the link is healed. An EOF travels the same line, so a close is
// delayed and held like data. Either side failing closes the connection.
func (c *proxyConn) pump(dst, src net.Conn) {
	line := make(chan segment, 1024)
	go func() {
		defer close(line)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case line <- segment{due: time.Now().Add(time.Duration(c.p.oneWay.Load())), data: buf[:n]}:
				case <-c.stop:
					return
				}
			}
			if err != nil {
				select {
				case line <- segment{due: time.Now().Add(time.Duration(c.p.oneWay.Load())), eof: true}:
				case <-c.stop:
				}
				return
			}
		}
	}()
	defer c.close()
	for seg := range line {
		if d := time.Until(seg.due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-c.stop:
				t.Stop()
				return
			}
		}
		if !c.p.waitHealed(c.stop) {
			return
		}
		if seg.eof {
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
				continue
			}
			return
		}
		if _, err := dst.Write(seg.data); err != nil {
			return
		}
	}
}
