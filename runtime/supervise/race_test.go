//go:build race

package supervise_test

// The supervisor under test runs in its own process; build it with the
// race detector whenever the tests themselves have it.
func init() { buildFlags = append(buildFlags, "-race") }
