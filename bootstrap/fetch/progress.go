package fetch

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"go.uber.org/zap"
)

// ProgressOptions says how a Fetch reports progress.
type ProgressOptions struct {
	// Terminal selects multi-bar output (per file and in total) on Output.
	// Otherwise a log line goes to the Logger every LogInterval.
	Terminal bool
	Output   io.Writer
	// LogInterval is the time between progress log lines (default 5s;
	// negative disables them).
	LogInterval time.Duration
	// Phase, if set, receives a short text for the lock holder record, e.g.
	// "downloading torch-2.8.0 (45%)", whenever it changes (at most once a
	// second, plus a final one). It is called from one goroutine at a time
	// and must not block.
	Phase func(string)
	// Bytes, if set, receives the bytes done and the total of the
	// current fetch (verified files count whole) about once a second and
	// once at the end, from one goroutine at a time; it must not block.
	Bytes func(done, total int64)
}

// itemProgress counts one item's bytes; methods are safe for concurrent use.
type itemProgress struct {
	tr    *tracker
	name  string
	total int64
	done  atomic.Int64
	state atomic.Int32 // 0 waiting, 1 active, 2 finished
	bar   *mpb.Bar     // guarded by tracker.barMu
	// carry is touched only by the item's own (sequential) attempts.
	carry *hashCarry
}

func (p *itemProgress) add(n int64) {
	p.done.Add(n)
	p.tr.done.Add(n)
	p.tr.streamed.Add(n)
}

// set moves the item's count to v (a resume found v bytes, a restart went
// back to zero) without counting it as transferred.
func (p *itemProgress) set(v int64) {
	p.state.CompareAndSwap(0, 1)
	old := p.done.Swap(v)
	p.tr.done.Add(v - old)
}

// tracker aggregates progress for one Fetch call and owns the reporting
// goroutine and the bars.
type tracker struct {
	f        *Fetcher
	items    []*itemProgress
	total    int64
	done     atomic.Int64
	streamed atomic.Int64
	finished atomic.Int64 // done or failed
	failed   atomic.Int64
	bars     *mpb.Progress
	totalBar *mpb.Bar
	barMu    sync.Mutex // guards itemProgress.bar
	began    time.Time
}

func newTracker(f *Fetcher, items []Item) *tracker {
	tr := &tracker{f: f, began: f.opt.Now()}
	for _, it := range items {
		tr.items = append(tr.items, &itemProgress{tr: tr, name: it.Name, total: it.Size})
		if it.Size > 0 {
			tr.total += it.Size
		}
	}
	return tr
}

func (tr *tracker) item(i int) *itemProgress { return tr.items[i] }

// finish marks item i done (or failed).
func (tr *tracker) finish(i int, ok bool) {
	p := tr.items[i]
	if p.state.Swap(2) == 2 {
		return
	}
	tr.finished.Add(1)
	if !ok {
		tr.failed.Add(1)
	}
	tr.barMu.Lock()
	defer tr.barMu.Unlock()
	if p.bar != nil {
		if ok {
			p.bar.SetTotal(-1, true)
		} else {
			p.bar.Abort(true)
		}
	}
}

// start launches the reporting goroutine; the returned stop ends it and
// waits for it (and for the bars to be drawn a last time).
func (tr *tracker) start(ctx context.Context) (stop func()) {
	opt := tr.f.opt.Progress
	if opt.Terminal && opt.Output != nil {
		tr.bars = mpb.NewWithContext(ctx, mpb.WithOutput(opt.Output), mpb.WithAutoRefresh(), mpb.WithWidth(40), mpb.WithRefreshRate(200*time.Millisecond))
		tr.totalBar = tr.bars.AddBar(tr.total,
			mpb.BarPriority(1<<30),
			mpb.PrependDecorators(decor.Name(fmt.Sprintf("total (%d files)", len(tr.items)), decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.Counters(decor.SizeB1024(0), "% .1f / % .1f"), decor.Name(" "), decor.Percentage()),
		)
	}
	interval := opt.LogInterval
	if interval == 0 {
		interval = 5 * time.Second
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		lastLog, lastPhase := tr.f.opt.Now(), time.Time{}
		phase := ""
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			now := tr.f.opt.Now()
			tr.updateBars()
			if now.Sub(lastPhase) >= time.Second {
				if opt.Phase != nil {
					if p := tr.phase(); p != phase {
						phase = p
						opt.Phase(p)
					}
				}
				if opt.Bytes != nil {
					opt.Bytes(tr.done.Load(), tr.total)
				}
				lastPhase = now
			}
			if !opt.Terminal && interval > 0 && now.Sub(lastLog) >= interval {
				tr.logLine(now)
				lastLog = now
			}
		}
	}()
	return func() {
		close(done)
		<-exited
		if tr.bars != nil {
			tr.updateBars()
			tr.barMu.Lock()
			for _, p := range tr.items {
				if p.bar != nil && !p.bar.Completed() {
					p.bar.Abort(true)
				}
			}
			tr.barMu.Unlock()
			tr.totalBar.SetCurrent(tr.done.Load())
			tr.totalBar.SetTotal(-1, true)
			tr.bars.Wait()
		}
		if opt.Phase != nil {
			opt.Phase(tr.summary())
		}
		if opt.Bytes != nil {
			opt.Bytes(tr.done.Load(), tr.total)
		}
	}
}

func (tr *tracker) updateBars() {
	if tr.bars == nil {
		return
	}
	tr.barMu.Lock()
	defer tr.barMu.Unlock()
	for _, p := range tr.items {
		if p.state.Load() != 1 {
			continue
		}
		if p.bar == nil {
			p.bar = tr.bars.AddBar(max(p.total, 0),
				mpb.BarRemoveOnComplete(),
				mpb.PrependDecorators(decor.Name(p.name, decor.WCSyncSpaceR)),
				mpb.AppendDecorators(decor.Counters(decor.SizeB1024(0), "% .1f / % .1f"), decor.Name(" "), decor.Percentage()),
			)
		}
		p.bar.SetCurrent(p.done.Load())
	}
	tr.totalBar.SetCurrent(tr.done.Load())
}

// phase is the holder-record text: the first active item and its share,
// and how many more are in flight.
func (tr *tracker) phase() string {
	var first *itemProgress
	active := 0
	for _, p := range tr.items {
		if p.state.Load() == 1 {
			if first == nil {
				first = p
			}
			active++
		}
	}
	if first == nil {
		return "downloading: " + tr.counts()
	}
	s := "downloading " + first.name
	if first.total > 0 {
		s += fmt.Sprintf(" (%d%%)", first.done.Load()*100/first.total)
	}
	if active > 1 {
		s += fmt.Sprintf(" and %d more", active-1)
	}
	if tr.total > 0 {
		s += fmt.Sprintf("; %s of %s", FormatSize(tr.done.Load()), FormatSize(tr.total))
	}
	return s
}

// counts says how many files are done, and how many of those failed: a
// failed one is not downloaded, whatever the count of finished ones says.
func (tr *tracker) counts() string {
	failed := tr.failed.Load()
	s := fmt.Sprintf("%d of %d files done", tr.finished.Load()-failed, len(tr.items))
	if failed > 0 {
		s += fmt.Sprintf(", %d failed", failed)
	}
	return s
}

// summary is the phase once every download has ended.
func (tr *tracker) summary() string {
	failed := tr.failed.Load()
	s := fmt.Sprintf("downloaded %d of %d files", tr.finished.Load()-failed, len(tr.items))
	if failed > 0 {
		s += fmt.Sprintf(", %d failed", failed)
	}
	return s
}

func (tr *tracker) logLine(now time.Time) {
	elapsed := now.Sub(tr.began).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(tr.streamed.Load()) / elapsed
	}
	fields := []zap.Field{
		zap.String("done", FormatSize(tr.done.Load())),
		zap.String("total", FormatSize(tr.total)),
		zap.Int64("files_done", tr.finished.Load()),
		zap.Int("files", len(tr.items)),
		zap.String("rate", FormatSize(int64(rate))+"/s"),
	}
	if rem := tr.total - tr.done.Load(); rate > 0 && rem > 0 {
		fields = append(fields, zap.Duration("eta", (time.Duration(float64(rem)/rate*float64(time.Second))).Round(time.Second)))
	}
	tr.f.log.Info("download progress", fields...)
}

// FormatSize writes a byte count for people, in binary units ("1.5 GiB");
// ParseSize reads such figures.
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
