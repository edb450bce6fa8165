// Package fileops schedules the bulk file operations of an install — the
// creates of a store entry, the links of a generation, the directories of
// both, the removals of the trash, the unpacking of a local tree — on the
// filesystem that holds them.
//
// Why one scheduler: on the volume our users have (MooseFS over FUSE) every
// create, link, mkdir and unlink is a round trip to the metadata server,
// and the kernel serializes creates and links within one parent directory
// (the directory's inode lock is held across the FUSE request). Measured
// on the MooseFS rig at 2 ms RTT: a small file's create+write+close takes
// 20 ms one at a time, 7.3 ms with 4-64 threads in one directory, 1.6-1.8 ms
// with 16-64 threads spread over as many directories. Throughput therefore
// comes from many directories at once, not from many operations on one,
// and the bound must be shared by everything writing to the filesystem at
// the same time (a store unpack and a generation build overlap during a
// sync), or each would size itself as if alone.
//
// Contract. A Scheduler bounds the operations in flight across every Group
// made from it. Within a Group, operations queued for one directory key run
// at most PerDir at a time, in the order queued; different keys run in
// parallel, taking free slots in turn (a key releases its slot after each
// operation, so a directory with a thousand files cannot starve one with
// three). The key is the directory an operation creates in or removes
// from; callers choose it, the scheduler never touches the filesystem.
//
// Failure and cancellation. The first error returned by an operation, or
// the cancellation of the Group's context, stops the Group: operations not
// yet started are dropped (never run), running ones finish, and Wait
// returns the first error (or the context's). An operation is never half
// run by the scheduler; what an operation leaves on disk when it fails is
// the operation's own contract.
//
// Concurrency. Go may be called from any goroutine until Wait is called,
// and from inside the Group's own operations until Wait returns; Wait is
// called once, by the Group's owner. Every goroutine a Group starts ends
// before Wait returns.
package fileops

import (
	"context"
	"sync"
)

// Scheduler bounds file operations in flight on one filesystem. The zero
// value is not usable; make one with New. A Scheduler is safe for
// concurrent use and needs no closing.
type Scheduler struct {
	slots  chan struct{}
	perDir int
}

// New returns a scheduler allowing jobs operations in flight in all (at
// least 1), and perDir on one directory key within a Group (at least 1).
func New(jobs, perDir int) *Scheduler {
	return &Scheduler{slots: make(chan struct{}, max(jobs, 1)), perDir: max(perDir, 1)}
}

// Acquire takes one slot for an operation the caller runs itself (a file
// written as it streams, a commit), or returns false when ctx ends first.
// A slot won at the same instant as the cancellation is given back, so a
// cancelled caller never holds one. Release it with Release.
func (s *Scheduler) Acquire(ctx context.Context) bool {
	select {
	case s.slots <- struct{}{}:
		if ctx.Err() != nil {
			<-s.slots
			return false
		}
		return true
	case <-ctx.Done():
		return false
	}
}

// Release gives back a slot taken by Acquire.
func (s *Scheduler) Release() { <-s.slots }

// Group is a set of operations run under a Scheduler and waited for
// together. See the package comment for ordering, failure and concurrency.
type Group struct {
	s      *Scheduler
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	queues  map[string]*dirQueue
	err     error
	dropped bool // an operation was queued but never run
	running sync.WaitGroup
}

// dirQueue holds one key's pending operations and how many of its runners
// are active.
type dirQueue struct {
	ops     []func() error
	runners int
}

// Group starts a group whose operations stop when ctx ends.
func (s *Scheduler) Group(ctx context.Context) *Group {
	gctx, cancel := context.WithCancelCause(ctx)
	return &Group{s: s, ctx: gctx, cancel: cancel, queues: map[string]*dirQueue{}}
}

// Context is the group's context: cancelled when the parent ends or an
// operation fails. Operations that block (a pipe, a lock) should watch it.
func (g *Group) Context() context.Context { return g.ctx }

// Go queues fn as an operation in directory key dir. After the group has
// stopped (an error, a cancellation), fn is dropped.
func (g *Group) Go(dir string, fn func() error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil || g.ctx.Err() != nil {
		g.dropped = true
		return
	}
	q := g.queues[dir]
	if q == nil {
		q = &dirQueue{}
		g.queues[dir] = q
	}
	q.ops = append(q.ops, fn)
	if q.runners < g.s.perDir {
		q.runners++
		g.running.Add(1)
		go g.run(dir, q)
	}
}

// run executes dir's queued operations one at a time, taking a slot for
// each, until the queue is empty or the group stops.
func (g *Group) run(dir string, q *dirQueue) {
	defer g.running.Done()
	for {
		g.mu.Lock()
		if len(q.ops) == 0 || g.err != nil || g.ctx.Err() != nil {
			if len(q.ops) > 0 {
				g.dropped = true
			}
			q.ops = nil
			q.runners--
			if q.runners == 0 {
				delete(g.queues, dir)
			}
			g.mu.Unlock()
			return
		}
		fn := q.ops[0]
		q.ops[0] = nil
		q.ops = q.ops[1:]
		g.mu.Unlock()

		if !g.s.Acquire(g.ctx) {
			g.mu.Lock()
			g.dropped = true
			g.mu.Unlock()
			continue // the group stopped: the loop drops what is queued
		}
		err := fn()
		g.s.Release()
		if err != nil {
			g.fail(err)
		}
	}
}

func (g *Group) fail(err error) {
	g.mu.Lock()
	if g.err == nil {
		g.err = err
	}
	g.mu.Unlock()
	g.cancel(err)
}

// Wait waits for every started operation and returns the first error, or
// the context's cause when the group stopped with operations not run. A
// group whose every operation ran and succeeded returns nil even if its
// context ended meanwhile.
func (g *Group) Wait() error {
	g.running.Wait()
	g.mu.Lock()
	err, dropped := g.err, g.dropped
	g.mu.Unlock()
	if err == nil && dropped {
		err = context.Cause(g.ctx)
	}
	g.cancel(nil)
	return err
}
