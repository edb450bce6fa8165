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

// Estimate is a projection of when the bootstrap's downloads will end.
type Estimate struct {
	Known     bool          // false until there is a rate and a total to project from
	Remaining time.Duration // time still needed at the current rate
	Finish    time.Duration // projected total init time: elapsed + Remaining
	Outlasts  bool          // Finish exceeds the init timeout
}

// EstimateInit projects the init time from elapsed time since the worker
// started, bytes left, and the observed rate (bytes per second). Without a
// positive rate or total there is nothing to project and Known is false,
// unless elapsed alone already exceeds the timeout.
func EstimateInit(elapsed time.Duration, p Progress, rate float64, timeout time.Duration) Estimate {
	left := p.BytesTotal - p.BytesDone
	if elapsed > timeout && left > 0 {
		return Estimate{Known: true, Finish: elapsed, Outlasts: true}
	}
	if p.BytesTotal <= 0 || rate <= 0 {
		return Estimate{}
	}
	if left < 0 {
		left = 0
	}
	rem := time.Duration(float64(left) / rate * float64(time.Second))
	return Estimate{Known: true, Remaining: rem, Finish: elapsed + rem, Outlasts: elapsed+rem > timeout}
}

// WatchInitBudget samples state's progress every interval until ctx ends
// and logs at most two lines.
//
// The first, a warning, comes the first time the projection says the
// bootstrap will outlast timeout, telling the operator to pre-populate the
// volume with `volboot sync` from a pod. The rate is measured from the first
// sample with bytes moving, so time spent probing or waiting for the lock
// does not dilute it.
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
		base          time.Time
		baseBytes     int64
		warned, noted bool
		margin        = min(timeout/10, 30*time.Second)
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
		var rate float64
		switch {
		case base.IsZero() && p.BytesDone > 0:
			base, baseBytes = now, p.BytesDone
		case !base.IsZero():
			if dt := now.Sub(base).Seconds(); dt > 0 {
				rate = float64(p.BytesDone-baseBytes) / dt
			}
		}
		elapsed := now.Sub(state.Started())
		if est := EstimateInit(elapsed, p, rate, timeout); !warned && est.Known && est.Outlasts {
			warned = true
			logger.Warn("the bootstrap will likely outlast RUNPOD_INIT_TIMEOUT and the platform may mark this worker unhealthy; pre-populate the volume with `volboot sync` from a pod",
				zap.Duration("init_timeout", timeout),
				zap.Duration("elapsed", elapsed.Round(time.Second)),
				zap.Duration("projected", est.Finish.Round(time.Second)),
				zap.Int64("bytes_left", p.BytesTotal-p.BytesDone),
				zap.Float64("rate_mb_per_s", rate/1e6))
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
