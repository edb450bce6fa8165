package lockgen

import (
	"os"
	"testing"

	"github.com/volboot/volboot/lockgen/lockgentest"
)

// TestMain lets this test binary stand in for uv and python3
// (lockgentest.Install links them to it).
func TestMain(m *testing.M) {
	if lockgentest.IsFake() {
		os.Exit(lockgentest.Main())
	}
	os.Exit(m.Run())
}
