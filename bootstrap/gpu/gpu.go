// Package gpu learns what NVIDIA hardware a worker has, without cgo, in two
// steps of very different cost (DESIGN.md §2):
//
//   - Fingerprint (step 1, every boot) reads a few small procfs, sysfs and
//     /dev entries and starts no process. Its result is an opaque string that
//     the reconciler stores next to a generation: equal fingerprints mean
//     "the full probe would answer the same", so the fast path can skip it.
//   - Probe (step 3, only on a fast-path miss) runs nvidia-smi, with a
//     timeout on every process, and returns the Facts that `when` conditions
//     test: driver version, the CUDA version the driver supports, and per GPU
//     its name, compute capability and memory.
//
// Holds evaluates one `when` condition against Facts.
//
// VOLBOOT_GPU_PROBE (EnvOverride) names a JSON facts file that replaces both
// steps, for tests and for trying a manifest on a machine without the GPU it
// targets; see ParseOverride for its schema.
//
// No GPU is a valid answer, not an error: Facts with zero GPUs, whose
// conditions do not hold. Probe returns an error (*SMIError) only when a
// GPU seems present but cannot be inspected, because guessing "no GPU"
// there would build and record a generation for the wrong hardware.
//
// All functions are safe for concurrent use; they share no state. Facts are
// plain values: do not modify a Facts while another goroutine reads it.
package gpu

import (
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
)

// EnvOverride is the environment variable naming a JSON facts file that
// replaces the probe and the fingerprint. Callers read it and pass it as
// Options.Override; this package never reads the environment itself.
const EnvOverride = "VOLBOOT_GPU_PROBE"

// DefaultTimeout bounds each nvidia-smi run when Options.Timeout is zero.
// nvidia-smi initialises NVML on every GPU, which takes a second or more on
// a large machine without persistence mode; a GPU in a bad state can make it
// hang for minutes.
const DefaultTimeout = 20 * time.Second

// NoGPU is the fingerprint of a machine without a usable NVIDIA driver or
// GPU.
const NoGPU = "none"

// Facts are what the probe learned. The JSON form is what the handler finds
// in VOLBOOT_CAPABILITIES (DESIGN.md §15); its driver, cuda and gpus fields
// are also the override file's schema.
type Facts struct {
	// Driver is the NVIDIA driver version ("570.86.15", "418.39"), "" when
	// no driver is loaded.
	Driver string `json:"driver"`
	// CUDA is the newest CUDA version the driver supports, as nvidia-smi's
	// header states it ("12.8"); "" when unknown.
	CUDA string `json:"cuda"`
	// GPUs are the GPUs this container can use; empty means no GPU.
	GPUs []GPU `json:"gpus"`
	// Source says where the facts came from: "nvidia-smi", "override <file>"
	// or "none" (no nvidia-smi and no driver).
	Source string `json:"source"`
	// Notes explain degraded answers: a fact taken from a fallback, or why
	// there is no GPU. Meant for people and logs, not for parsing.
	Notes []string `json:"notes,omitempty"`
}

// GPU is one GPU.
type GPU struct {
	Name string `json:"name"` // "NVIDIA A100-SXM4-80GB"
	// ComputeCapability is "major.minor" ("8.0"); "" when the driver is too
	// old to report it (nvidia-smi's compute_cap field needs driver >= 510).
	ComputeCapability string `json:"compute_capability"`
	MemoryMiB         int64  `json:"memory_mib"` // 0 when unknown
}

// Options configure Fingerprint and Probe. The zero value probes the real
// machine with nvidia-smi from PATH.
type Options struct {
	// Root prefixes every absolute path read (/proc, /sys, /dev), so tests
	// can point at a fake tree. "" means "/".
	Root string
	// Override is the path of a JSON facts file (EnvOverride). When set,
	// Fingerprint and Probe read only that file.
	Override string
	// SMI is the nvidia-smi program: a name looked up in PATH or a path.
	// "" means "nvidia-smi".
	SMI string
	// Timeout bounds each nvidia-smi run; 0 means DefaultTimeout.
	Timeout time.Duration
	// Logger receives debug records of what was run and how long it took;
	// nil discards them.
	Logger *zap.Logger
}

func (o *Options) logger() *zap.Logger {
	if o.Logger == nil {
		return zap.NewNop()
	}
	return o.Logger
}

func (o *Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return DefaultTimeout
	}
	return o.Timeout
}

func (o *Options) smi() string {
	if o.SMI == "" {
		return "nvidia-smi"
	}
	return o.SMI
}

// String summarises the facts on one line for logs and status output, e.g.
// "2 x NVIDIA A100-SXM4-80GB (compute capability 8.0, 81920 MiB); driver
// 570.86.15, CUDA 12.8".
func (f *Facts) String() string {
	if f == nil || len(f.GPUs) == 0 {
		s := "no NVIDIA GPU"
		if f != nil && f.Driver != "" {
			s += "; driver " + f.Driver
		}
		return s
	}
	var parts []string
	for i := 0; i < len(f.GPUs); {
		j := i + 1
		for j < len(f.GPUs) && f.GPUs[j] == f.GPUs[i] {
			j++
		}
		g := f.GPUs[i]
		cc := g.ComputeCapability
		if cc == "" {
			cc = "unknown"
		}
		d := fmt.Sprintf("%s (compute capability %s", g.Name, cc)
		if g.MemoryMiB > 0 {
			d += fmt.Sprintf(", %d MiB", g.MemoryMiB)
		}
		d += ")"
		if j-i > 1 {
			d = fmt.Sprintf("%d x %s", j-i, d)
		}
		parts = append(parts, d)
		i = j
	}
	cuda := f.CUDA
	if cuda == "" {
		cuda = "unknown"
	}
	return fmt.Sprintf("%s; driver %s, CUDA %s", strings.Join(parts, ", "), f.Driver, cuda)
}
