package lockfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// Mode selects how the lock is taken.
type Mode string

const (
	// ModeFlock uses flock on the lock file plus the epoch claims; it falls
	// back to ModeLeaseOnly when flock fails with ENOSYS, ENOLCK or
	// EOPNOTSUPP. The zero Mode means ModeFlock.
	ModeFlock Mode = "flock"
	// ModeLeaseOnly never calls flock: epoch claims and holder records only.
	ModeLeaseOnly Mode = "lease-only"
	// ModeOff takes no lock at all and writes nothing. FOR TESTS ONLY: it
	// lets crash and concurrency tests show that the volume stays correct
	// without the lock (DESIGN.md rule 2).
	ModeOff Mode = "off"
)

// EnvMode is the environment variable the command line passes to ParseMode.
const EnvMode = "VOLBOOT_LOCK_MODE"

// ParseMode parses a mode name; "" is ModeFlock.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeFlock:
		return ModeFlock, nil
	case ModeLeaseOnly, ModeOff:
		return Mode(s), nil
	}
	return "", fmt.Errorf("lock mode %q: use flock, lease-only or off (%s)", s, EnvMode)
}

// Defaults used for zero Options fields.
const (
	DefaultTTL         = 60 * time.Second
	DefaultWaitTimeout = 30 * time.Minute
	DefaultPollMin     = 100 * time.Millisecond
	DefaultPollMax     = 2 * time.Second
	DefaultLogEvery    = 10 * time.Second
)

// ErrFenced reports that this process no longer holds the lock: a newer
// epoch was claimed (a waiter judged us stale and took over), or the holder
// record could not be refreshed for half the TTL. Work done since the last
// successful Check must not be committed.
var ErrFenced = errors.New("volume lock lost to another worker (fenced)")

// ErrTimeout reports that the wait for a live holder exceeded
// Options.WaitTimeout.
var ErrTimeout = errors.New("timed out waiting for the volume lock")

// ErrReleased is what Err and Check return after Release.
var ErrReleased = errors.New("volume lock released")

// Options configures Acquire. Only Dir is required.
type Options struct {
	// Dir is the .volboot directory on the volume; it is created if missing.
	Dir    string
	Logger *zap.Logger
	// Identity names this process in the holder record. Zero fields are
	// filled from LocalIdentity; tests set Host to play another machine.
	Identity Identity
	Mode     Mode
	// TTL is how long a holder record may stay unchanged, by the waiter's
	// own clock, before the holder counts as dead (default 60 s).
	TTL time.Duration
	// Heartbeat is how often the holder refreshes its record (default
	// TTL/12, so five seconds for the default TTL). Must be under TTL/2.
	Heartbeat time.Duration
	// PollMin and PollMax bound the waiter's backoff between polls.
	PollMin, PollMax time.Duration
	// WaitTimeout bounds the wait for a live holder (--lock-timeout,
	// default 30 min); negative waits without bound.
	WaitTimeout time.Duration
	// LogEvery is how often a waiter logs whom it waits for (default 10 s).
	LogEvery time.Duration
	// Phase is the initial phase text of the holder record.
	Phase string
	Clock Clock
}

func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("lockfile: Options.Dir is empty")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	m, err := ParseMode(string(o.Mode))
	if err != nil {
		return o, err
	}
	o.Mode = m
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = o.TTL / 12
	}
	if o.Heartbeat >= o.TTL/2 {
		return o, fmt.Errorf("lockfile: heartbeat %s must be under half the TTL %s", o.Heartbeat, o.TTL)
	}
	if o.PollMin <= 0 {
		o.PollMin = DefaultPollMin
	}
	if o.PollMax <= 0 {
		o.PollMax = DefaultPollMax
	}
	if o.PollMax < o.PollMin {
		o.PollMax = o.PollMin
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.LogEvery <= 0 {
		o.LogEvery = DefaultLogEvery
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	o.Identity = fillIdentity(o.Identity)
	o.Phase = cleanPhase(o.Phase)
	return o, nil
}

// Lock is a held volume lock. Its methods are safe for concurrent use. A
// heartbeat goroutine owned by the Lock refreshes the holder record until
// Release, until ctx (given to Acquire) is done, or until it detects that
// the lock was lost; Release must be called in every case.
type Lock struct {
	o          Options
	claims     claimDir
	holderPath string
	fl         flocker // nil without flock
	epoch      uint64
	holderID   string
	mode       Mode
	off        bool

	writeMu sync.Mutex // serialises record writes (heartbeat, Release)

	mu     sync.Mutex
	rec    Holder // last record written (Heartbeat, Phase current)
	phase  string
	err    error // non-nil once lost or released
	lastOK time.Time

	prev       *Holder // the holder taken over from, if any
	prevReason string

	lost        chan struct{}
	nudge       chan struct{} // SetPhase changed the phase (nil when off)
	stop        chan struct{}
	done        chan struct{}
	releaseOnce sync.Once
	releaseErr  error
	noteOnce    sync.Once
}

// Epoch is the fencing token of this tenure: it grows with every new holder.
func (l *Lock) Epoch() uint64 { return l.epoch }

// HolderID names this tenure in the holder record.
func (l *Lock) HolderID() string { return l.holderID }

// Mode is the mode the lock was finally taken in (ModeFlock may have fallen
// back to ModeLeaseOnly).
func (l *Lock) Mode() Mode {
	return l.mode
}

// Takeover reports whether this lock was taken from a holder judged dead or
// stale rather than handed over by a release: the reason, and that holder's
// last record when one was readable. The caller may want to clean up after
// the previous holder's interrupted work (its temporary files name its host
// and pid).
func (l *Lock) Takeover() (reason string, previous *Holder) {
	return l.prevReason, l.prev
}

// SetPhase sets the phase text, such as "downloading torch-2.8.0 (45%)".
// A changed phase reaches the holder record promptly (status and waiters
// read it there), but at most once per PhaseEvery: the rest wait for the
// next write. Control characters become spaces and long text is cut.
func (l *Lock) SetPhase(phase string) {
	phase = cleanPhase(phase)
	l.mu.Lock()
	changed := l.phase != phase
	l.phase = phase
	l.mu.Unlock()
	if changed && l.nudge != nil {
		select {
		case l.nudge <- struct{}{}:
		default: // a write is already due
		}
	}
}

// PhaseEvery is the least time between two holder-record writes made for
// a new phase: each costs a create, a write, an fsync and a rename on the
// volume.
const PhaseEvery = time.Second

// Lost is closed when the lock is lost (Err then wraps ErrFenced), when the
// ctx given to Acquire ends, or on Release.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Context returns a context derived from parent that ends when the lock is
// lost or released, with l.Err() as its cause (context.Cause), so that work
// done under the lock stops promptly on fencing. The helper goroutine ends
// when either context ends; call cancel when done with the context.
func (l *Lock) Context(parent context.Context) (ctx context.Context, cancel context.CancelFunc) {
	ctx, cancelCause := context.WithCancelCause(parent)
	go func() {
		select {
		case <-l.lost:
			cancelCause(l.Err())
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancelCause(context.Canceled) }
}

// Err is nil while the lock is held; afterwards it says why not: ErrFenced,
// ErrReleased or the context's error, wrapped.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Check confirms, with a fresh read of the claims directory, that no newer
// epoch exists. Call it right before each write that must not happen after
// a takeover; it returns an error wrapping ErrFenced if one did. It costs a
// directory read (a network round trip): call it at commit points, not for
// every file.
func (l *Lock) Check() error {
	if err := l.Err(); err != nil {
		return err
	}
	if l.off {
		return nil
	}
	if err := l.fenceCheck(); err != nil {
		if errors.Is(err, ErrFenced) {
			l.fenced(err)
		}
		return err
	}
	return nil
}

// fenced records that a newer epoch took the lock from us, and whether
// flock let that happen while we held it.
func (l *Lock) fenced(err error) {
	l.lose(err)
	l.noteOnce.Do(l.noteFlockFailure)
}

func (l *Lock) fenceCheck() error {
	cur, err := l.claims.current()
	if err != nil {
		return fmt.Errorf("confirm volume lock epoch %d: %w", l.epoch, err)
	}
	switch {
	case cur > l.epoch:
		return fmt.Errorf("%w: epoch %d was claimed after ours (%d) in %s", ErrFenced, cur, l.epoch, l.claims.dir)
	case cur < l.epoch:
		return fmt.Errorf("%w: our claim %s is gone", ErrFenced, l.claims.path(l.epoch))
	}
	return nil
}

// lose records the first reason the lock stopped being held.
func (l *Lock) lose(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
		close(l.lost)
	}
}

// beat writes the next holder record. The temporary file is written and
// synced first and the fence checked last, right before the rename, so that
// a process paused in between (the expensive part) does not overwrite a
// newer holder's record on resuming.
func (l *Lock) beat() error { return l.write(false) }

func (l *Lock) write(released bool) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.mu.Lock()
	rec := l.rec
	rec.Heartbeat++
	rec.Phase = l.phase
	rec.Updated = l.o.Clock.Now().UTC().Round(0)
	rec.Released = released
	l.mu.Unlock()
	data, err := marshalRecord(rec)
	if err != nil {
		return fmt.Errorf("encode holder record: %w", err)
	}
	f, err := atomicfile.Create(l.holderPath, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		f.Abort()
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	if err := l.fenceCheck(); err != nil {
		f.Abort()
		return err
	}
	if lost := l.Err(); lost != nil && !released {
		// Given up while this refresh waited for the volume: a record
		// committed now would tell waiters we live.
		f.Abort()
		return lost
	}
	if err := f.Commit(); err != nil {
		// A new holder removes temporary files of a paused predecessor:
		// report the fencing rather than the missing file.
		if ferr := l.fenceCheck(); errors.Is(ferr, ErrFenced) {
			return ferr
		}
		return err
	}
	l.mu.Lock()
	l.rec = rec
	l.lastOK = l.o.Clock.Now()
	l.mu.Unlock()
	return nil
}

// heartbeatLoop refreshes the holder record every Heartbeat. Each refresh
// runs in a goroutine of its own, owned by this loop, so that a volume that
// stops answering (a network filesystem cut off from its server blocks
// every call) cannot stop the loop from noticing: once no refresh has
// completed for half the TTL the lock counts as lost, whether the last
// refresh failed or is still waiting, because waiters may take over from
// then on. The loop waits for a refresh in flight before it ends, unless
// the lock is lost (see the deferred function).
func (l *Lock) heartbeatLoop(ctx context.Context) {
	defer close(l.done)
	clk := l.o.Clock
	beatDone := make(chan error, 1)
	inFlight := false
	var lastStart time.Time // of the last refresh
	start := func() {
		inFlight, lastStart = true, clk.Now()
		go func() { beatDone <- l.beat() }()
	}
	// A new phase is written by an early refresh, spaced PhaseEvery
	// apart. The heartbeat's own timer runs regardless, so that phases
	// arriving faster than refreshes complete never postpone the check
	// for a volume that stopped answering.
	phasePending := false
	var phaseWait <-chan time.Time
	tick := clk.After(l.o.Heartbeat)
	defer func() {
		// A refresh still blocked once the lock is lost is left to end
		// with its system call (it sends into the buffered channel and
		// returns, and commits nothing: see write); waiting for it would
		// keep Release, and the process, on a volume that may never
		// answer again.
		if inFlight && l.Err() == nil {
			<-beatDone
		}
	}()
	for {
		if phasePending && !inFlight && phaseWait == nil {
			if wait := PhaseEvery - clk.Now().Sub(lastStart); wait > 0 {
				phaseWait = clk.After(wait)
			} else {
				phasePending = false
				start()
			}
		}
		var err error
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			l.lose(fmt.Errorf("volume lock abandoned: %w", ctx.Err()))
			return
		case <-l.nudge:
			phasePending = true
			continue
		case <-phaseWait:
			phaseWait = nil
			continue
		case err = <-beatDone:
			inFlight = false
			if err == nil {
				continue
			}
		case <-tick:
			tick = clk.After(l.o.Heartbeat)
			if !inFlight {
				phasePending = false // this refresh carries the phase too
				start()
				continue
			}
			// The refresh started at an earlier tick is still waiting.
		}
		if errors.Is(err, ErrFenced) {
			l.o.Logger.Error("volume lock lost: another worker took over; stopping work under it",
				zap.Uint64("epoch", l.epoch), zap.Error(err))
			l.fenced(err)
			return
		}
		l.mu.Lock()
		since := clk.Now().Sub(l.lastOK)
		l.mu.Unlock()
		if err != nil {
			l.o.Logger.Warn("could not refresh the volume lock's holder record", zap.Error(err), zap.Duration("since_last_refresh", since))
		}
		if since >= l.o.TTL/2 {
			why := "the volume has not answered the refresh"
			if err != nil {
				why = err.Error()
			}
			err = fmt.Errorf("%w: holder record %s not refreshed for %s (TTL %s), other workers may take over: %s",
				ErrFenced, l.holderPath, since.Round(time.Millisecond), l.o.TTL, why)
			l.o.Logger.Error("volume lock lost", zap.Error(err))
			l.lose(err)
			return
		}
	}
}

// unreliableName marks a volume on which two processes were seen holding
// flock at once. Contenders then still take flock but no longer treat a free
// flock as proof that a holder is gone. People may remove the file once the
// filesystem is fixed.
const unreliableName = "flock-unreliable"

// noteFlockFailure runs when this holder was fenced: if we held flock all
// along and the new holder says it took flock too, flock let two processes
// hold it at once, and the volume is marked so that nobody trusts it again.
//
// The one who took over is the claimer of the next epoch, whose claim file
// holds its record as it claimed: by the time we look, it may have
// released, and a third worker may hold a later epoch without flock. Only
// when that claim is gone (cleanup keeps the newest few) does the current
// holder's record stand in for it.
func (l *Lock) noteFlockFailure() {
	if l.fl == nil {
		return
	}
	var next *Holder
	if raw, _, err := readRecordFile(l.claims.path(l.epoch + 1)); err == nil {
		if h, err := ParseHolder(raw); err == nil {
			next = &h
		}
	}
	if next == nil {
		st, _, err := readStatus(l.claims, l.holderPath)
		if err != nil || st.Holder == nil || st.Epoch <= l.epoch {
			return
		}
		next = st.Holder
	}
	if !next.HasFlock {
		return
	}
	markFlockUnreliable(l.o.Logger, l.o.Dir, fmt.Sprintf("%s (pid %d) took flock and epoch %d while %s (pid %d) held flock and epoch %d",
		next.Host, next.PID, next.Epoch, l.o.Identity.Host, l.o.Identity.PID, l.epoch))
}

func markFlockUnreliable(log *zap.Logger, dir, why string) {
	p := filepath.Join(dir, unreliableName)
	log.Warn("flock let two workers hold the volume lock at once; from now on holders are judged by their records only",
		zap.String("marker", p), zap.String("evidence", why))
	if err := atomicfile.Write(p, []byte(why+"\n"), 0o644); err != nil {
		log.Warn("could not write the flock-unreliable marker", zap.Error(err))
	}
}

// Release stops the heartbeat, marks the holder record released (unless the
// lock was fenced, in which case nothing is written) and drops flock. It
// returns an error wrapping ErrFenced if the lock had been lost to another
// worker, so that the caller knows its work may have overlapped. Later calls
// return the first call's result.
func (l *Lock) Release() error {
	l.releaseOnce.Do(func() {
		close(l.stop)
		<-l.done
		if l.off {
			l.lose(ErrReleased)
			return
		}
		prior := l.Err()
		var errs []error
		if prior != nil && errors.Is(prior, ErrFenced) {
			errs = append(errs, prior)
		} else if err := l.write(true); err != nil {
			errs = append(errs, fmt.Errorf("release volume lock: %w", err))
			if errors.Is(err, ErrFenced) {
				// Taken over since our last look: it may have been
				// flock that let it happen.
				l.noteOnce.Do(l.noteFlockFailure)
			}
		}
		if l.fl != nil {
			if err := l.fl.Unlock(); err != nil {
				errs = append(errs, fmt.Errorf("unlock %s: %w", l.fl.Path(), err))
			}
		}
		l.lose(ErrReleased)
		l.releaseErr = errors.Join(errs...)
		if l.releaseErr == nil {
			l.o.Logger.Info("released the volume lock", zap.Uint64("epoch", l.epoch))
		}
	})
	return l.releaseErr
}

// HolderStatus is what a reader learns about the lock without taking it.
type HolderStatus struct {
	// Epoch is the current epoch, 0 if the lock was never taken.
	Epoch uint64
	// Holder is the current epoch's record: holder.json when it names the
	// current epoch, otherwise the claim file (the holder has not written
	// holder.json yet, or died first). Nil when neither parses; Err says why.
	Holder *Holder
	// FromHolderFile says Holder came from holder.json.
	FromHolderFile bool
	// Released: the current holder released the lock, so it is free.
	Released bool
	// ModTime is holder.json's modification time as this host sees it: an
	// approximate age for people, never used for decisions.
	ModTime time.Time
	Err     error
	// FlockUnreliable: two workers were once seen holding flock at once on
	// this volume (the flock-unreliable marker; see package doc).
	FlockUnreliable bool
}

// ReadHolder reports who holds the lock in dir (the .volboot directory)
// without taking it or writing anything: for read-only commands such as
// status. It cannot tell a live holder from a dead one in one look; the
// record's Heartbeat counter and ModTime help people judge.
func ReadHolder(dir string) (HolderStatus, error) {
	st, _, err := readStatus(claimDir{dir: filepath.Join(dir, "claims")}, filepath.Join(dir, "holder.json"))
	if _, serr := os.Stat(filepath.Join(dir, unreliableName)); serr == nil {
		st.FlockUnreliable = true
	}
	return st, err
}

// readStatus also returns the raw bytes of holder.json, which waiters
// compare between polls.
func readStatus(claims claimDir, holderPath string) (HolderStatus, []byte, error) {
	var st HolderStatus
	cur, err := claims.current()
	if err != nil {
		return st, nil, err
	}
	st.Epoch = cur
	raw, mtime, err := readRecordFile(holderPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return st, nil, err
	}
	st.ModTime = mtime
	var fileErr error
	if raw != nil {
		h, err := ParseHolder(raw)
		switch {
		case err != nil:
			fileErr = fmt.Errorf("%s: %w", holderPath, err)
		case h.Epoch == cur:
			st.Holder, st.FromHolderFile, st.Released = &h, true, h.Released
			return st, raw, nil
		}
	}
	if cur == 0 {
		st.Err = fileErr
		return st, raw, nil
	}
	cp := claims.path(cur)
	craw, _, err := readRecordFile(cp)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Removed between the listing and the read: the next look
			// will see the newer epoch.
			st.Err = fmt.Errorf("%s vanished while being read", cp)
			return st, raw, nil
		}
		return st, nil, err
	}
	h, err := ParseHolder(craw)
	if err != nil {
		st.Err = fmt.Errorf("%s (record pending or damaged): %w", cp, err)
		return st, raw, nil
	}
	st.Holder = &h
	return st, raw, nil
}
