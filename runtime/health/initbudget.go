package health

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// DefaultInitTimeout is RunPod's default RUNPOD_INIT_TIMEOUT: workers still
// initializing after it are marked unhealthy.
const DefaultInitTimeout = 7 * time.Minute

// maxInitSeconds bounds RUNPOD_INIT_TIMEOUT in seconds far below where a
// time.Duration overflows; no platform waits a year for a worker.
const maxInitSeconds = 365 * 24 * 3600

// ParseInitTimeout reads RUNPOD_INIT_TIMEOUT: whole seconds, as RunPod sets
// it ("600"), or a Go duration ("10m"). Empty means DefaultInitTimeout.
func ParseInitTimeout(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return DefaultInitTimeout, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 || n > maxInitSeconds {
			return 0, fmt.Errorf("RUNPOD_INIT_TIMEOUT=%q: must be a number of seconds between 1 and %d", v, maxInitSeconds)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("RUNPOD_INIT_TIMEOUT=%q: want whole seconds (600) or a duration (10m)", v)
	}
	return d, nil
}

// Estimate is a projection of when the bootstrap's downloads and unpacking
// will end.
type Estimate struct {
	Known     bool          // false until there is a rate and a total to project from
	Remaining time.Duration // time still needed at the current rate
	Finish    time.Duration // projected total init time: elapsed + Remaining
	Outlasts  bool          // Finish exceeds the init timeout
}

// Rates are the bootstrap's measured speeds, bytes per second; 0 where
// nothing was measured yet.
type Rates struct {
	Download float64 // bytes downloaded
	Unpack   float64 // bytes of wheels unpacked into the store
}

// EstimateInit projects the init time from elapsed time since the worker
// started, the work left, and the observed rates: the later of the
// downloads' end and the unpacking's end (the unpacking follows the
// downloads, and on a network volume it is the slower). Without a positive
// rate and total for either there is nothing to project and Known is
// false, unless elapsed alone already exceeds the timeout with work left.
func EstimateInit(elapsed time.Duration, p Progress, r Rates, timeout time.Duration) Estimate {
	left := max(p.BytesTotal-p.BytesDone, 0)
	unpackLeft := max(p.UnpackTotal-p.UnpackDone, 0)
	if elapsed > timeout && left+unpackLeft > 0 {
		return Estimate{Known: true, Finish: elapsed, Outlasts: true}
	}
	var rem time.Duration
	known := false
	if p.BytesTotal > 0 && r.Download > 0 {
		rem, known = time.Duration(float64(left)/r.Download*float64(time.Second)), true
	}
	if p.UnpackTotal > 0 && r.Unpack > 0 {
		rem, known = max(rem, time.Duration(float64(unpackLeft)/r.Unpack*float64(time.Second))), true
	}
	if !known {
		return Estimate{}
	}
	return Estimate{Known: true, Remaining: rem, Finish: elapsed + rem, Outlasts: elapsed+rem > timeout}
}

// Suggest is the RUNPOD_INIT_TIMEOUT, in whole minutes, that leaves a
// projected init time a fifth to spare.
func Suggest(projected time.Duration) time.Duration {
	return (projected*6/5 + time.Minute - 1).Truncate(time.Minute)
}

// rateMeter measures a counter's rate from the first sample at which it
// moved, so that time spent before (probing, waiting for the lock, the
// downloads an unpack waits for) does not dilute it.
type rateMeter struct {
	base      time.Time
	baseCount int64
}

func (m *rateMeter) sample(now time.Time, count int64) float64 {
	if m.base.IsZero() {
		if count > 0 {
			m.base, m.baseCount = now, count
		}
		return 0
	}
	if dt := now.Sub(m.base).Seconds(); dt > 0 {
		return float64(count-m.baseCount) / dt
	}
	return 0
}

// WatchInitBudget samples state's progress every interval until ctx ends
// and logs at most two lines.
//
// The first, a warning, comes the first time the projection says the
// bootstrap will outlast timeout: it gives the projection, the timeout that
// would cover it, and says to pre-populate the volume with `volboot sync`
// from a pod. Each rate is measured from the first sample with its counter
// moving, so time spent probing or waiting for the lock does not dilute
// it.
//
// The second comes when less than a tenth of timeout (at most 30 s) is
// left: the platform's kill comes without a word, so this is the last line
// a killed worker leaves. It says how far the bootstrap got; what it
// finished stays on the volume and the next worker goes on from there.
//
// It returns when ctx ends or both lines are out; the caller runs it in a
// goroutine it cancels when the bootstrap ends.
func WatchInitBudget(ctx context.Context, state *State, timeout, interval time.Duration, logger *zap.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var (
		downloads, unpacks rateMeter
		warned, noted      bool
		margin             = min(timeout/10, 30*time.Second)
	)
	for !warned || !noted {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := state.Now()
		snap := state.Snapshot()
		p := snap.Progress
		r := Rates{Download: downloads.sample(now, p.BytesDone), Unpack: unpacks.sample(now, p.UnpackDone)}
		elapsed := now.Sub(state.Started())
		if est := EstimateInit(elapsed, p, r, timeout); !warned && est.Known && est.Outlasts {
			warned = true
			logger.Warn(fmt.Sprintf("the bootstrap will likely outlast RUNPOD_INIT_TIMEOUT (%s): projected %s at the speeds measured so far, and the platform may mark this worker unhealthy first. Set RUNPOD_INIT_TIMEOUT to %d (seconds) or more, or pre-populate the volume with `volboot sync` from a pod; what this worker finishes stays on the volume either way",
				timeout, est.Finish.Round(time.Second), int(Suggest(est.Finish).Seconds())),
				zap.Duration("init_timeout", timeout),
				zap.Duration("elapsed", elapsed.Round(time.Second)),
				zap.Duration("projected", est.Finish.Round(time.Second)),
				zap.Int64("bytes_left", p.BytesTotal-p.BytesDone),
				zap.Float64("download_mb_per_s", r.Download/1e6),
				zap.Int64("unpack_bytes_left", p.UnpackTotal-p.UnpackDone),
				zap.Float64("unpack_mb_per_s", r.Unpack/1e6))
		}
		if !noted && elapsed >= timeout-margin {
			noted = true
			logger.Warn(fmt.Sprintf("RUNPOD_INIT_TIMEOUT (%s) ends in %s: the bootstrap is at %q with %d of %d packages in the store and %s of %s downloaded; what is done stays on the volume and the next worker goes on from it",
				timeout, max(0, timeout-elapsed).Round(time.Second), snap.Detail, p.PackagesDone, p.PackagesTotal, mib(p.BytesDone), mib(p.BytesTotal)),
				zap.Duration("init_timeout", timeout), zap.Duration("elapsed", elapsed.Round(time.Second)),
				zap.Int("packages_done", p.PackagesDone), zap.Int("packages_total", p.PackagesTotal),
				zap.Int64("bytes_done", p.BytesDone), zap.Int64("bytes_total", p.BytesTotal))
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
