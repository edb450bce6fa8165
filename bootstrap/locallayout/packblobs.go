package locallayout

import (
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/wheel"
)

// Packing from the store's blobs (DESIGN.md §5.8, wheel/smallblob.go).
//
// A store entry made by this volboot carries a blob of its small files,
// which its manifest describes (wheel.Entry.Small). BuildPack reads each
// such entry's blob once (wheel.ReadSmallBlob: the whole blob checked
// against the manifest, every file against its size, mode and RECORD
// hash) instead of opening each of its files, and reads a file from the
// store as before when its entry has no blob, the blob is missing or
// damaged (a warning, once per entry), or the blob lacks the file. The
// pack's bytes do not depend on which: a file of an entry that has a blob
// gets the fixed mtime writtenMTime whichever way it was read (the store
// file's own mtime is the server's, which the blob cannot know without a
// stat of every file; the entry's bytecode is unchecked-hash, so nothing
// compares the two), and a file of an entry without one keeps its store
// file's mtime, as before blobs.
//
// Blobs are read as the pack's frames need them, at most PackOptions.Jobs
// at once: the entries of the next frame are read while the current one
// is, and an entry's files are dropped from memory once the last of them
// is written, so at most the entries of two frames are held (records go
// in path order, and an entry's files mostly sit together in it).

// readBlob reads an entry's blob; tests replace it.
var readBlob = wheel.ReadSmallBlob

// blobs holds the blobs a pack is being read from.
type blobs struct {
	log     *zap.Logger
	gen     string
	mu      sync.Mutex
	entries map[*wheel.Entry]*entryBlob
	sem     chan struct{} // bounds the blobs read at once
	wg      sync.WaitGroup
	read    atomic.Int64 // files taken from blobs
}

// entryBlob is one entry's blob: read once, dropped when its last file
// has been taken.
type entryBlob struct {
	once  sync.Once
	files map[string][]byte // nil: no usable blob
	left  atomic.Int64      // the pack's files still to take from this entry
}

// newBlobs counts, for each entry with a blob, the pack's files it is to
// give; at most jobs blobs are read at once.
func newBlobs(items []item, jobs int, gen string, log *zap.Logger) *blobs {
	b := &blobs{log: log, gen: gen, entries: map[*wheel.Entry]*entryBlob{}, sem: make(chan struct{}, max(jobs, 1))}
	for i := range items {
		if e := items[i].entry; e != nil && e.Small != nil && items[i].read != "" {
			eb := b.entries[e]
			if eb == nil {
				eb = &entryBlob{}
				b.entries[e] = eb
			}
			eb.left.Add(1)
		}
	}
	return b
}

func (b *blobs) get(e *wheel.Entry) *entryBlob {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.entries[e]
}

// load reads e's blob, once.
func (b *blobs) load(e *wheel.Entry, eb *entryBlob) {
	eb.once.Do(func() {
		b.sem <- struct{}{}
		files, err := readBlob(e)
		<-b.sem
		if err != nil {
			b.log.Warn("pack of generation "+b.gen+": a store entry's blob of small files is not usable; reading its files one by one",
				zap.String("wheel", e.Filename), zap.Error(err))
			return
		}
		eb.files = files
	})
}

// prefetch starts reading the blobs the items need, in the background.
func (b *blobs) prefetch(items []item) {
	seen := map[*wheel.Entry]bool{}
	for i := range items {
		e := items[i].entry
		if e == nil || items[i].read == "" || seen[e] {
			continue
		}
		seen[e] = true
		if eb := b.get(e); eb != nil {
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.load(e, eb)
			}()
		}
	}
}

// take returns the bytes of it's file from its entry's blob, reading the
// blob first if need be, and false when the blob does not give them.
// Safe for concurrent use.
func (b *blobs) take(it *item) ([]byte, bool) {
	if it.entry == nil {
		return nil, false
	}
	eb := b.get(it.entry)
	if eb == nil {
		return nil, false
	}
	b.load(it.entry, eb)
	data, ok := eb.files[it.rel]
	if ok && int64(len(data)) == it.size {
		b.read.Add(1)
		return data, true
	}
	return nil, false
}

// done says it's file has been written: its entry's blob is dropped after
// the last.
func (b *blobs) done(it *item) {
	if it.entry == nil || it.read == "" {
		return
	}
	eb := b.get(it.entry)
	if eb == nil || eb.left.Add(-1) > 0 {
		return
	}
	b.mu.Lock()
	delete(b.entries, it.entry)
	b.mu.Unlock()
}

// wait waits for the reads prefetch started.
func (b *blobs) wait() { b.wg.Wait() }
