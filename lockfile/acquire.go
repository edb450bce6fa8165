package lockfile

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/gofrs/flock"
	"go.uber.org/zap"
)

// This file is the waiting side of the lock: Acquire and the rules by which
// a contender decides to claim the next epoch (see the package comment).
// lock.go is the holding side: heartbeat, fencing, release.

// Acquire waits for and takes the volume lock in o.Dir. It returns an error
// wrapping ErrTimeout when a live holder outlasts o.WaitTimeout (the message
// names the holder and its phase), ctx's error when ctx ends first, or an
// I/O error naming the file. The lock's heartbeat stops when ctx is done,
// after which the lock counts as lost; keep ctx alive for as long as the
// lock is used.
func Acquire(ctx context.Context, o Options) (*Lock, error) {
	return acquire(ctx, o, func(path string) flocker {
		// Read-write: NFS emulates flock with POSIX locks, which refuse an
		// exclusive lock on a descriptor opened read-only.
		return flock.New(path, flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o644))
	})
}

// flocker is the part of *flock.Flock we use; tests substitute a broken one.
type flocker interface {
	TryLock() (bool, error)
	Unlock() error
	Path() string
}

func acquire(ctx context.Context, o Options, newFlock func(path string) flocker) (*Lock, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if o.Mode == ModeOff {
		l := &Lock{o: o, off: true, mode: ModeOff, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
		close(l.done)
		o.Logger.Warn("volume lock disabled (lock mode off, for tests only)", zap.String("dir", o.Dir))
		return l, nil
	}
	claimsPath := filepath.Join(o.Dir, "claims")
	if err := os.MkdirAll(claimsPath, 0o755); err != nil {
		return nil, fmt.Errorf("create lock directory: %w", err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	w := &waiter{
		o:          o,
		claims:     claimDir{dir: claimsPath},
		holderPath: filepath.Join(o.Dir, "holder.json"),
		holderID:   fmt.Sprintf("%s-%d-%s", o.Identity.Host, o.Identity.PID, hex.EncodeToString(rnd[:])),
		mode:       o.Mode,
		flockTrust: true,
	}
	if len(w.holderID) > maxIDBytes {
		w.holderID = w.holderID[len(w.holderID)-maxIDBytes:]
	}
	if w.mode == ModeFlock {
		if err := ensureFile(filepath.Join(o.Dir, "lock")); err != nil {
			return nil, err
		}
		w.fl = newFlock(filepath.Join(o.Dir, "lock"))
		if _, err := os.Stat(filepath.Join(o.Dir, unreliableName)); err == nil {
			w.flockTrust = false
			o.Logger.Info("flock was seen failing on this volume; judging holders by their records only",
				zap.String("marker", filepath.Join(o.Dir, unreliableName)))
		}
	}
	l, err := w.run(ctx)
	if err != nil && w.fl != nil {
		_ = w.fl.Unlock()
	}
	return l, err
}

// ensureFile creates path if it does not exist. MooseFS answers an open
// with O_CREATE (without O_EXCL) EEXIST when another client created the
// name between the kernel's lookup and the create, where a local
// filesystem would open the file: so create exclusively, and take EEXIST
// as the file being there.
func ensureFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err == nil {
		return f.Close()
	}
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	return fmt.Errorf("create the lock file: %w", err)
}

// waiter is the state of one Acquire call.
type waiter struct {
	o               Options
	claims          claimDir
	holderPath      string
	holderID        string
	mode            Mode
	fl              flocker
	haveFlock       bool
	flockTrust      bool   // false once an epoch was claimed while we held flock
	flockEpoch      uint64 // the current epoch when we got flock
	flockEpochKnown bool
	flockMarked     bool // this waiter wrote the flock-unreliable marker

	lastKey    string
	lastChange time.Time
}

// observation is one look at the lock's files.
type observation struct {
	HolderStatus
	key string // changes whenever the holder does anything
}

func (w *waiter) observe() (observation, error) {
	st, raw, err := readStatus(w.claims, w.holderPath)
	if err != nil {
		return observation{}, err
	}
	sum := sha256.Sum256(raw)
	return observation{HolderStatus: st, key: fmt.Sprintf("%d/%x", st.Epoch, sum[:8])}, nil
}

func (w *waiter) run(ctx context.Context) (*Lock, error) {
	log := w.o.Logger
	clk := w.o.Clock
	start := clk.Now()
	var lastLog, readErrAt time.Time
	backoff := w.o.PollMin
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("waiting for the volume lock in %s: %w", w.o.Dir, err)
		}
		if w.fl != nil && !w.haveFlock {
			ok, err := w.fl.TryLock()
			switch {
			case err != nil && flockUnsupported(err):
				log.Warn("flock is not supported on this filesystem; using lease-only locking",
					zap.String("path", w.fl.Path()), zap.Error(err))
				w.fl, w.mode = nil, ModeLeaseOnly
			case errors.Is(err, syscall.EINTR), errors.Is(err, syscall.EAGAIN):
				// Refused for now; try again at the next poll.
			case err != nil:
				return nil, fmt.Errorf("flock %s: %w", w.fl.Path(), err)
			case ok:
				w.haveFlock, w.flockEpochKnown = true, false
			}
		}
		obs, err := w.observe()
		now := clk.Now()
		if err != nil {
			// A network filesystem has bad moments: keep polling through
			// them for up to a TTL, but fail at once on permissions.
			if errors.Is(err, fs.ErrPermission) || (!readErrAt.IsZero() && now.Sub(readErrAt) >= w.o.TTL) {
				return nil, err
			}
			if readErrAt.IsZero() {
				readErrAt = now
				log.Warn("cannot read the volume lock's state; retrying", zap.Error(err))
			}
			if err := w.sleep(ctx, backoff); err != nil {
				return nil, err
			}
			continue
		}
		readErrAt = time.Time{}
		if w.haveFlock && !w.flockEpochKnown {
			w.flockEpoch, w.flockEpochKnown = obs.Epoch, true
			if obs.Holder != nil && obs.Holder.Epoch > w.flockEpoch {
				w.flockEpoch = obs.Holder.Epoch // the claims' listing lagged the record
			}
		}
		if w.haveFlock && w.flockTrust && obs.Epoch > w.flockEpoch {
			w.flockTrust = false
			log.Warn("another worker claimed the volume lock while this one held flock; judging by holder records",
				zap.String("path", w.fl.Path()), zap.Uint64("epoch", obs.Epoch))
		}
		// A record of an epoch claimed after we took flock, by a worker
		// that says it held flock too: flock let two hold it. The record
		// may show up later than the claim (a network filesystem's
		// caches), so every observation while we hold flock is judged.
		if h := obs.Holder; w.haveFlock && !w.flockMarked && h != nil && h.HasFlock && h.Epoch > w.flockEpoch {
			w.flockMarked, w.flockTrust = true, false
			markFlockUnreliable(log, w.o.Dir, fmt.Sprintf("%s (pid %d) took flock and epoch %d while %s (pid %d) held flock",
				h.Host, h.PID, h.Epoch, w.o.Identity.Host, w.o.Identity.PID))
		}
		if obs.key != w.lastKey {
			w.lastKey, w.lastChange = obs.key, now
		}
		unchanged := now.Sub(w.lastChange)

		if take, reason, warn := w.decide(obs, unchanged); take {
			l, won, err := w.claim(ctx, obs, reason, warn, now.Sub(start))
			if err != nil || won {
				return l, err
			}
			// Another waiter claimed the same epoch first. Start judging
			// the new holder afresh.
			log.Debug("another worker claimed the volume lock first", zap.Uint64("epoch", obs.Epoch+1))
			w.lastKey = ""
			if w.haveFlock {
				w.flockTrust = false
			}
			backoff = w.o.PollMin
		} else {
			waited := now.Sub(start)
			if lastLog.IsZero() || now.Sub(lastLog) >= w.o.LogEvery {
				lastLog = now
				log.Info("waiting for the volume lock", w.holderFields(obs, waited, unchanged)...)
			}
			if w.o.WaitTimeout > 0 && waited >= w.o.WaitTimeout {
				return nil, w.timeoutError(obs, waited, unchanged)
			}
		}

		d := backoff
		if w.o.WaitTimeout > 0 {
			if left := w.o.WaitTimeout - now.Sub(start); left > 0 && d > left {
				d = left
			}
		}
		if err := w.sleep(ctx, d); err != nil {
			return nil, err
		}
		if backoff *= 2; backoff > w.o.PollMax {
			backoff = w.o.PollMax
		}
	}
}

// sleep waits about d (spread by jitter so that many waiters do not poll in
// step) or until ctx ends.
func (w *waiter) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for the volume lock in %s: %w", w.o.Dir, ctx.Err())
	case <-w.o.Clock.After(jitter(d)):
		return nil
	}
}

// decide applies the rules of the package comment to one observation.
func (w *waiter) decide(obs observation, unchanged time.Duration) (take bool, reason string, warn bool) {
	free := obs.Epoch == 0 || obs.Released
	if w.haveFlock && w.flockTrust {
		switch {
		case free:
			return true, "lock free", false
		case obs.Holder != nil && obs.Holder.HasFlock:
			return true, "flock is free, so its previous holder is gone", true
		}
		// The holder runs without flock: judge it by its record.
	} else if w.mode == ModeFlock && !w.haveFlock {
		// Someone holds flock: a live holder, a contender about to claim,
		// or a client that died holding it, whose lock the file server
		// keeps (MooseFS: still held 300 s after the client died, and its
		// master keeps sessions a day by default). A released record lets
		// us claim: the exclusive
		// claim decides between us and a contender. Otherwise only a
		// record unchanged for the TTL lets us past.
		if free {
			return true, "lock released, but flock is still refused (a contender about to claim, or a dead client's lingering lock); claiming without flock", false
		}
		if unchanged >= w.o.TTL {
			return true, fmt.Sprintf("flock is still refused but the holder record has not changed for %s (TTL %s): a dead client's lock may linger; taking over without flock", unchanged.Round(time.Millisecond), w.o.TTL), true
		}
		return false, "", false
	}
	if free {
		return true, "lock free", false
	}
	if obs.Holder != nil {
		if gone, why := processGone(obs.Holder.Identity, w.o.Identity); gone {
			return true, "holder is dead: " + why, true
		}
	}
	if unchanged >= w.o.TTL {
		return true, fmt.Sprintf("holder record has not changed for %s (TTL %s)", unchanged.Round(time.Millisecond), w.o.TTL), true
	}
	return false, "", false
}

// claim tries to take epoch obs.Epoch+1. won=false with a nil error means
// another waiter got it first.
func (w *waiter) claim(ctx context.Context, obs observation, reason string, warn bool, waited time.Duration) (*Lock, bool, error) {
	epoch := obs.Epoch + 1
	now := w.o.Clock.Now()
	rec := Holder{
		Schema:   SchemaVersion,
		HolderID: w.holderID,
		Identity: w.o.Identity,
		Mode:     w.mode,
		HasFlock: w.haveFlock,
		Epoch:    epoch,
		Started:  now.UTC().Round(0),
		Updated:  now.UTC().Round(0),
		Phase:    w.o.Phase,
	}
	data, err := marshalRecord(rec)
	if err != nil {
		return nil, false, fmt.Errorf("encode holder record: %w", err)
	}
	won, err := w.claims.create(epoch, data)
	if err != nil || !won {
		return nil, false, err
	}
	// Rule 2 of the package comment: a claim is void if a newer epoch
	// exists (we re-created a name that cleanup had removed).
	cur, err := w.claims.current()
	if err != nil {
		return nil, false, err
	}
	if cur != epoch {
		w.o.Logger.Debug("lock claim void: a newer epoch exists", zap.Uint64("claimed", epoch), zap.Uint64("current", cur))
		return nil, false, nil
	}
	l := &Lock{
		o:          w.o,
		claims:     w.claims,
		holderPath: w.holderPath,
		epoch:      epoch,
		holderID:   rec.HolderID,
		mode:       rec.Mode,
		rec:        rec,
		phase:      rec.Phase,
		lastOK:     now,
		lost:       make(chan struct{}),
		nudge:      make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if w.haveFlock {
		l.fl = w.fl
	}
	if warn {
		l.prev, l.prevReason = obs.Holder, reason
	}
	if err := l.beat(); err != nil {
		if errors.Is(err, ErrFenced) {
			// Taken over between our claim and our first record: as if
			// we had lost the race.
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("volume lock epoch %d claimed but its holder record could not be written: %w", epoch, err)
	}
	if info, err := os.Stat(w.claims.path(epoch)); err == nil {
		w.claims.cleanup(w.o.Logger, info.ModTime(), w.o.TTL)
		removeStaleTemps(w.o.Logger, w.o.Dir, "holder.json", info.ModTime(), w.o.TTL)
	}
	fields := []zap.Field{zap.Uint64("epoch", epoch), zap.String("lock_mode", string(w.mode)),
		zap.Bool("flock", w.haveFlock), zap.Duration("waited", waited), zap.String("reason", reason)}
	if warn {
		if h := obs.Holder; h != nil {
			fields = append(fields, zap.Uint64("previous_epoch", h.Epoch), zap.String("previous_host", h.Host),
				zap.Int("previous_pid", h.PID), zap.String("previous_holder_id", h.HolderID),
				zap.String("previous_phase", h.Phase), zap.Uint64("previous_heartbeat", h.Heartbeat))
		}
		w.o.Logger.Warn("took over the volume lock", fields...)
	} else {
		w.o.Logger.Info("acquired the volume lock", fields...)
	}
	go l.heartbeatLoop(ctx)
	return l, true, nil
}

func (w *waiter) holderFields(obs observation, waited, unchanged time.Duration) []zap.Field {
	f := []zap.Field{zap.String("dir", w.o.Dir), zap.Uint64("epoch", obs.Epoch),
		zap.Duration("waited", waited.Round(time.Millisecond)),
		zap.Duration("holder_unchanged_for", unchanged.Round(time.Millisecond)),
		zap.String("lock_mode", string(w.mode)), zap.Bool("flock_held_here", w.haveFlock)}
	if h := obs.Holder; h != nil {
		f = append(f, zap.String("holder_host", h.Host), zap.Int("holder_pid", h.PID),
			zap.String("holder_id", h.HolderID), zap.String("holder_phase", h.Phase),
			zap.Uint64("holder_heartbeat", h.Heartbeat))
	} else if obs.Err != nil {
		f = append(f, zap.NamedError("holder_record_error", obs.Err))
	}
	return f
}

func (w *waiter) timeoutError(obs observation, waited, unchanged time.Duration) error {
	if h := obs.Holder; h != nil {
		return fmt.Errorf("%w in %s after %s: host %s pid %d (holder %s, epoch %d, phase %q) holds it and its record last changed %s ago: another worker is still working on this volume; wait for it, check that worker's logs, or raise --lock-timeout",
			ErrTimeout, w.o.Dir, waited.Round(time.Second), h.Host, h.PID, h.HolderID, h.Epoch, h.Phase, unchanged.Round(time.Second))
	}
	var why string
	switch {
	case w.mode == ModeFlock && !w.haveFlock:
		why = "flock on " + filepath.Join(w.o.Dir, "lock") + " is held"
		if obs.Err != nil {
			why += " and the holder record is unreadable (" + obs.Err.Error() + ")"
		}
	case obs.Err != nil:
		why = "the holder record is unreadable (" + obs.Err.Error() + ")"
	default:
		why = fmt.Sprintf("epoch %d is held", obs.Epoch)
	}
	return fmt.Errorf("%w in %s after %s: %s, and the holder cannot be named: another worker is probably still working on this volume; wait for it or raise --lock-timeout",
		ErrTimeout, w.o.Dir, waited.Round(time.Second), why)
}

// flockUnsupported reports flock errors that mean "this filesystem cannot
// lock", as opposed to transient failures.
func flockUnsupported(err error) bool {
	return errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.ENOLCK) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTSUP)
}

// jitter spreads polls of many waiters by ±25 %.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d*3/4 + time.Duration(mrand.Int64N(int64(d)/2+1))
}
