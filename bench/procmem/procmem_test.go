package procmem

import (
	"os"
	"testing"
)

func TestSelfAndOf(t *testing.T) {
	ballast := make([]byte, 32<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	m, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if m.Peak < 32<<20 || m.RSS > m.Peak {
		t.Fatalf("Self = %+v with 32 MiB touched", m)
	}
	o, err := Of(os.Getpid())
	if err != nil || o.Peak < m.Peak {
		t.Fatalf("Of(self) = %+v, %v", o, err)
	}
	if _, err := Of(-1); err == nil {
		t.Fatal("Of(-1) succeeded")
	}
	_ = ballast[len(ballast)-1]
}
