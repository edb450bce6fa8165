// Package health reports a worker's condition over HTTP the way RunPod's
// load balancer reads it (DESIGN.md §1, §15): GET /ping answers 204 while
// the worker is bootstrapping or warm-loading, 200 when the handler is
// ready and 503 when something failed; GET /status answers the JSON of the
// current phase, progress, groups, generation and timings.
//
// State is the one object the bootstrap and the supervisor update and the
// server reads. All of its methods are safe for concurrent use.
package health

import (
	"net/http"
	"sync"
	"time"
)

// Phase is where the worker is in its life.
type Phase string

const (
	PhaseBootstrapping Phase = "bootstrapping" // making the volume match the manifest
	PhaseWarmLoading   Phase = "warm-loading"  // handler started, not ready yet
	PhaseReady         Phase = "ready"         // handler said it is ready
	PhaseRestarting    Phase = "restarting"    // handler failed; waiting to restart it
	PhaseUnhealthy     Phase = "unhealthy"     // handler runs but missed its readiness deadline
	PhaseStopping      Phase = "stopping"      // stop requested or handler said STOPPING=1
	PhaseFailed        Phase = "failed"        // bootstrap or handler failed for good
)

// PingCode is the /ping status code for a phase: 204 initializing, 200
// healthy, 503 unhealthy (RunPod treats anything but 200 and 204 as
// unhealthy).
func (p Phase) PingCode() int {
	switch p {
	case PhaseBootstrapping, PhaseWarmLoading, PhaseRestarting:
		return http.StatusNoContent
	case PhaseReady:
		return http.StatusOK
	default:
		return http.StatusServiceUnavailable
	}
}

// Progress counts the bootstrap's work. Totals are 0 until known.
type Progress struct {
	BytesDone     int64 `json:"bytes_done"`
	BytesTotal    int64 `json:"bytes_total"`
	PackagesDone  int   `json:"packages_done"`
	PackagesTotal int   `json:"packages_total"`
	// UnpackDone and UnpackTotal weigh the store's work by the wheels'
	// sizes: bytes of wheels unpacked (bytecode and commit included) of
	// those this bootstrap has to unpack. On a network volume unpacking,
	// not downloading, is what takes long.
	UnpackDone  int64 `json:"unpack_done_bytes,omitempty"`
	UnpackTotal int64 `json:"unpack_total_bytes,omitempty"`
}

// Group is one manifest group's outcome on this worker, as status --json
// reports it: installed, skipped, degraded or missing.
type Group struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// Snapshot is a consistent copy of the state; it is also the /status body.
type Snapshot struct {
	Phase      Phase    `json:"phase"`
	Detail     string   `json:"detail,omitempty"` // why the phase was entered (error text, handler STATUS=)
	Progress   Progress `json:"progress"`
	Groups     []Group  `json:"groups"`
	Generation *string  `json:"generation"`
	HandlerPID int      `json:"handler_pid,omitempty"`
	Restarts   int      `json:"restarts"`
	Timings    Timings  `json:"timings"`
}

// Timings are seconds since the State was created, or null when the event
// has not happened (yet).
type Timings struct {
	StartedAt           time.Time `json:"started_at"`
	UptimeSeconds       float64   `json:"uptime_seconds"`
	BootstrapSeconds    *float64  `json:"bootstrap_seconds"`     // when the bootstrap ended
	HandlerStartSeconds *float64  `json:"handler_start_seconds"` // when the current handler started
	ReadySeconds        *float64  `json:"ready_seconds"`         // when a handler first became ready
}

// State is the worker's condition. The zero value is not usable; use
// NewState.
type State struct {
	now func() time.Time

	mu           sync.Mutex
	start        time.Time
	phase        Phase
	detail       string
	progress     Progress
	groups       []Group
	generation   string
	handlerPID   int
	restarts     int
	bootstrapEnd time.Time
	handlerStart time.Time
	firstReady   time.Time
}

// NewState starts in PhaseBootstrapping with the clock now (time.Now when
// nil) marking the start.
func NewState(now func() time.Time) *State {
	if now == nil {
		now = time.Now
	}
	return &State{now: now, start: now(), phase: PhaseBootstrapping}
}

// Now is the clock the State uses.
func (s *State) Now() time.Time { return s.now() }

// Started is when the State was created.
func (s *State) Started() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start
}

// SetPhase moves to phase with a human-readable detail ("" for none).
// Entering PhaseReady the first time records the ready timing.
func (s *State) SetPhase(p Phase, detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase = p
	s.detail = detail
	if p == PhaseReady && s.firstReady.IsZero() {
		s.firstReady = s.now()
	}
}

// Phase is the current phase.
func (s *State) Phase() Phase {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase
}

// SetDetail replaces the detail text without changing the phase (a
// handler's STATUS= line).
func (s *State) SetDetail(detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detail = detail
}

// SetProgress replaces the progress counters.
func (s *State) SetProgress(p Progress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress = p
}

// SetBytes sets the byte counters alone, so that a concurrent SetPackages
// cannot undo it.
func (s *State) SetBytes(done, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress.BytesDone, s.progress.BytesTotal = done, total
}

// SetUnpacked sets the unpack counters alone.
func (s *State) SetUnpacked(done, total int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress.UnpackDone, s.progress.UnpackTotal = done, total
}

// SetPackages sets the package counters alone.
func (s *State) SetPackages(done, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress.PackagesDone, s.progress.PackagesTotal = done, total
}

// AddProgress adds to the done counters (totals unchanged): what a
// download loop calls per chunk or per package.
func (s *State) AddProgress(bytes int64, packages int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress.BytesDone += bytes
	s.progress.PackagesDone += packages
}

// SetTotals sets the progress totals once the plan is known.
func (s *State) SetTotals(bytes int64, packages int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress.BytesTotal = bytes
	s.progress.PackagesTotal = packages
}

// SetGroups records the groups' outcomes; the slice is copied.
func (s *State) SetGroups(groups []Group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups = append([]Group(nil), groups...)
}

// SetGeneration records the generation id the handler runs from.
func (s *State) SetGeneration(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.generation = id
}

// BootstrapDone records the end of the bootstrap.
func (s *State) BootstrapDone() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bootstrapEnd = s.now()
}

// HandlerStarted records a handler start (pid) and counts restarts: every
// start after the first is one.
func (s *State) HandlerStarted(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.handlerStart.IsZero() {
		s.restarts++
	}
	s.handlerPID = pid
	s.handlerStart = s.now()
}

// Snapshot returns a consistent copy.
func (s *State) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	snap := Snapshot{
		Phase:      s.phase,
		Detail:     s.detail,
		Progress:   s.progress,
		Groups:     append([]Group{}, s.groups...),
		HandlerPID: s.handlerPID,
		Restarts:   s.restarts,
		Timings: Timings{
			StartedAt:           s.start.UTC(),
			UptimeSeconds:       now.Sub(s.start).Seconds(),
			BootstrapSeconds:    s.since(s.bootstrapEnd),
			HandlerStartSeconds: s.since(s.handlerStart),
			ReadySeconds:        s.since(s.firstReady),
		},
	}
	if s.generation != "" {
		g := s.generation
		snap.Generation = &g
	}
	return snap
}

func (s *State) since(t time.Time) *float64 {
	if t.IsZero() {
		return nil
	}
	v := t.Sub(s.start).Seconds()
	return &v
}
