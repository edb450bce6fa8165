package gpu_test

import (
	"fmt"

	"github.com/Masterminds/semver/v3"

	"github.com/volboot/volboot/bootstrap/gpu"
)

func ExampleHolds() {
	f := &gpu.Facts{Driver: "570.86.15", CUDA: "12.8", GPUs: []gpu.GPU{
		{Name: "NVIDIA A100-SXM4-80GB", ComputeCapability: "8.0", MemoryMiB: 81920},
		{Name: "Tesla T4", ComputeCapability: "7.5", MemoryMiB: 15360},
	}}
	for _, cond := range []struct{ fact, text string }{
		{gpu.FactCUDA, ">=12.8"},
		{gpu.FactComputeCapability, ">=8.0"},
		{gpu.FactDriver, ">=550"},
	} {
		c, _ := semver.NewConstraint(cond.text)
		ok, reason := gpu.Holds(f, cond.fact, c, cond.text)
		fmt.Println(ok, reason)
	}
	ok, reason := gpu.Holds(&gpu.Facts{}, gpu.FactCUDA, nil, ">=12.8")
	fmt.Println(ok, reason)
	// Output:
	// true CUDA 12.8 satisfies >=12.8
	// false compute capability 7.5 of GPU 1 (Tesla T4) does not satisfy >=8.0
	// true driver 570.86.15 satisfies >=550
	// false no NVIDIA GPU
}
