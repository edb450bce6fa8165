package mfsrig

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// A name with spaces and a parenthesis, as proc(5) allows.
	stat := "4242 (mfs (data) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1000 1000 100 18446744073709551615"
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Fatalf("CPU = %s, want %s", got, want)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 ten 12", "1 (x) S 1 2 3 4 5 6 7 8 9 10 99999999999999999 1", "1 (x) S 1 2 3 4 5 6 7 8 9 10 -11 12"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q): no error", bad)
		}
	}
}

func TestProcessCPUOfSelf(t *testing.T) {
	// Burn some CPU, then read our own counter back: it must have moved.
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
		for i := 0; i < 1e5; i++ {
			x += i
		}
	}
	after, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 50*time.Millisecond {
		t.Fatalf("300 ms of busy loop moved our CPU time by %s (%d)", after-before, x)
	}
}

func FuzzParseStatCPU(f *testing.F) {
	f.Add("1 (a) S 1 1 1 0 -1 0 0 0 0 0 5 6 0 0")
	f.Add("1 (a b)) R 1 2 3 4 5 6 7 8 9 10 11 12 13")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseStatCPU(s)
		if err == nil && d < 0 {
			t.Fatalf("negative CPU %s from %q", d, s)
		}
	})
}
