package gpu

import (
	"fmt"
	"testing"
)

// BenchmarkFingerprint shows the fast-path cost: on this machine's real
// tree, and on a fake 8-GPU server with a hundred other PCI functions.
// Informational only; performance goals are measured under bench/.
func BenchmarkFingerprint(b *testing.B) {
	b.Run("real", func(b *testing.B) {
		for b.Loop() {
			if _, err := Fingerprint(Options{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fake-8-gpu", func(b *testing.B) {
		devs := []pciDev{}
		for i := 0; i < 8; i++ {
			devs = append(devs, pciDev{fmt.Sprintf("0000:%02x:00.0", 0x10+i), "0x10de", "0x030200", "0x2330", ""})
		}
		for i := 0; i < 100; i++ {
			devs = append(devs, pciDev{fmt.Sprintf("0000:%02x:01.%d", 0x80+i/8, i%8), "0x8086", "0x060400", "0x09ab", ""})
		}
		root := fakeRoot(b, procProprietary, 1, devs...)
		b.ResetTimer()
		for b.Loop() {
			if _, err := Fingerprint(Options{Root: root}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
