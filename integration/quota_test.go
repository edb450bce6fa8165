package integration

import (
	"os"
	"testing"
	"time"
)

// quota bounds a randomized loop (kills, races) by time as well as by
// count, so that the suite's length does not grow with the machine's
// slowness: the loop runs until it has done want rounds or spent budget,
// and then it must have done at least min. A slow or busy machine does
// fewer rounds, each still fully checked; only one too slow to reach min
// fails (the rounds are what the test asserts on, not their speed).
// VOLBOOT_LONG_TESTS=1 lifts the time bound (ten times budget) for a
// long run by hand.
type quota struct {
	want, min int
	budget    time.Duration
	start     time.Time
}

func newQuota(want, min int, budget time.Duration) *quota {
	if os.Getenv("VOLBOOT_LONG_TESTS") != "" {
		budget *= 10
	}
	return &quota{want: want, min: min, budget: budget, start: time.Now()}
}

// more says whether a loop that has done done rounds goes on.
func (q *quota) more(done int) bool {
	return done < q.want && time.Since(q.start) < q.budget
}

// check fails t when done is under the minimum, naming what was counted
// and why a round takes long here (slow).
func (q *quota) check(t *testing.T, done int, what, slow string) {
	t.Helper()
	if done < q.min {
		t.Fatalf("only %d %s in %s, at least %d wanted (%s): the machine is too slow for this test", done, what, time.Since(q.start).Round(time.Millisecond), q.min, slow)
	}
}
