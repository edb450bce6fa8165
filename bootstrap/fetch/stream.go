package fetch

import (
	"hash"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// asyncHashMin is the transfer size from which hashing runs on its own
// goroutine.
const asyncHashMin = 4 << 20

// hashSink receives body bytes to hash.
type hashSink interface{ Write(p []byte) }

type inlineHasher struct{ h hash.Hash }

func (i inlineHasher) Write(p []byte) { i.h.Write(p) }

// streamHasher hashes on its own goroutine so that hashing overlaps with
// network reads and file writes. Write copies into one of a few slots (the
// caller's buffer is reused as soon as Write returns) and blocks only when
// all slots wait to be hashed. Write is called from one goroutine at a
// time; Close waits until everything written is hashed, and must be called
// exactly once. The goroutine exits in Close.
type streamHasher struct {
	h     hash.Hash
	full  chan []byte
	free  chan []byte
	done  chan struct{}
	pool  *sync.Pool
	slots int
}

// newStreamHasher takes its slots from pool (buffers of exactly size bytes)
// and returns them in Close.
func newStreamHasher(h hash.Hash, slots, size int, pool *sync.Pool) *streamHasher {
	s := &streamHasher{h: h, full: make(chan []byte, slots), free: make(chan []byte, slots), done: make(chan struct{}), pool: pool, slots: slots}
	for i := 0; i < slots; i++ {
		b, _ := pool.Get().(*[]byte)
		if b == nil || len(*b) != size {
			nb := make([]byte, size)
			b = &nb
		}
		s.free <- *b
	}
	go func() {
		defer close(s.done)
		for b := range s.full {
			s.h.Write(b)
			s.free <- b[:cap(b)]
		}
	}()
	return s
}

func (s *streamHasher) Write(p []byte) {
	for len(p) > 0 {
		b := <-s.free
		n := copy(b[:cap(b)], p)
		s.full <- b[:n]
		p = p[n:]
	}
}

func (s *streamHasher) Close() {
	close(s.full)
	<-s.done
	for i := 0; i < s.slots; i++ {
		b := <-s.free
		s.pool.Put(&b)
	}
}

// writeback asks the kernel to start writing a growing part file (fh,
// owned by the caller and open until Close returns) to disk
// every `every` bytes, so the fsync before the rename finds little left to
// flush and dirty pages do not pile up. It is advisory: errors (a
// filesystem without sync_file_range) only switch it off. progress is
// called from the reading goroutine; the flush runs on a goroutine owned
// by the writeback and stopped by Close.
type writeback struct {
	fh    *os.File
	every int64
	next  int64
	kick  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newWriteback(fh *os.File, every int64) *writeback {
	w := &writeback{fh: fh, every: every, next: every}
	if every <= 0 {
		return w
	}
	w.kick = make(chan struct{}, 1)
	w.done = make(chan struct{})
	go w.loop()
	return w
}

func (w *writeback) progress(n int64) {
	if w == nil || w.kick == nil || n < w.next {
		return
	}
	w.next = n + w.every
	select {
	case w.kick <- struct{}{}:
	default: // a flush is already pending
	}
}

func (w *writeback) loop() {
	defer close(w.done)
	fd := int(w.fh.Fd())
	for range w.kick {
		if err := unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE); err != nil {
			return
		}
	}
}

// Close stops the flushing goroutine and waits for it.
func (w *writeback) Close() {
	if w == nil || w.kick == nil {
		return
	}
	w.once.Do(func() { close(w.kick) })
	<-w.done
}
