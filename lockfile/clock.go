package lockfile

import "time"

// Clock is the time source for waiting, staleness and heartbeats. Tests
// inject a fake one; nil means the system clock. Durations are taken with
// Now().Sub, so the system clock's monotonic reading is used and wall-clock
// steps do not matter.
type Clock interface {
	Now() time.Time
	// After delivers the time on the returned channel after d. The channel
	// has room for one value, so an abandoned timer blocks nobody.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
