package gpu

import (
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// The facts a `when` condition may test (manifests.Facts lists the same).
const (
	FactCUDA              = "cuda"
	FactComputeCapability = "compute-capability"
	FactDriver            = "driver"
)

// Value is one reading of a fact: the text as probed and its semver form.
// GPU is the index of the GPU it belongs to, -1 for machine-wide facts.
type Value struct {
	GPU     int
	Raw     string
	Version *semver.Version
}

// Values returns the versions a `when` condition on fact is tested
// against: one for "cuda" and "driver" (the driver is machine-wide), one
// per GPU for "compute-capability". Versions with two parts ("12.8") or a
// leading zero ("535.104.05") are coerced to semver (12.8.0, 535.104.5).
//
// Errors say why the fact has no value: no GPU, an unknown fact name, or a
// fact the probe could not learn ("compute capability of GPU 0 (Tesla K80)
// unknown").
func Values(f *Facts, fact string) ([]Value, error) {
	switch fact {
	case FactCUDA, FactDriver, FactComputeCapability:
	default:
		return nil, fmt.Errorf("unknown condition fact %q (want %s, %s or %s)", fact, FactCUDA, FactComputeCapability, FactDriver)
	}
	if f == nil || len(f.GPUs) == 0 {
		return nil, fmt.Errorf("no NVIDIA GPU")
	}
	one := func(raw string) ([]Value, error) {
		if raw == "" {
			return nil, fmt.Errorf("%s unknown", factLabel(fact))
		}
		v, err := coerce(raw)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", factLabel(fact), raw, err)
		}
		return []Value{{GPU: -1, Raw: raw, Version: v}}, nil
	}
	switch fact {
	case FactCUDA:
		return one(f.CUDA)
	case FactDriver:
		return one(f.Driver)
	}
	vals := make([]Value, 0, len(f.GPUs))
	for i, g := range f.GPUs {
		if g.ComputeCapability == "" {
			return nil, fmt.Errorf("compute capability%s unknown (the driver is too old to report it)", ofGPU(f, i))
		}
		v, err := coerce(g.ComputeCapability)
		if err != nil {
			return nil, fmt.Errorf("compute capability%s %q: %w", ofGPU(f, i), g.ComputeCapability, err)
		}
		vals = append(vals, Value{GPU: i, Raw: g.ComputeCapability, Version: v})
	}
	return vals, nil
}

// Holds evaluates one `when` condition: fact (FactCUDA,
// FactComputeCapability or FactDriver) against constraint c, whose text as
// written is text (used in the reason; when c is nil, text is parsed).
//
// With several GPUs a condition holds only if it holds for every GPU: the
// handler may run its work on any of them, so a generation with flash-attn
// on a machine mixing an A100 and a T4 would crash on the T4. With no GPU,
// conditions on GPU facts do not hold, driver and cuda included: there is
// nothing to run CUDA on, and the group is skipped.
//
// reason explains the answer either way, for status output and logs:
// "no NVIDIA GPU", "compute capability 7.5 does not satisfy >=8.0",
// "CUDA 12.8 satisfies >=12.8".
func Holds(f *Facts, fact string, c *semver.Constraints, text string) (ok bool, reason string) {
	if c != nil && text == "" {
		text = c.String()
	}
	if c == nil {
		var err error
		if c, err = semver.NewConstraint(text); err != nil {
			return false, fmt.Sprintf("%s condition %q is not a semver constraint: %v", fact, text, err)
		}
	}
	vals, err := Values(f, fact)
	if err != nil {
		return false, err.Error()
	}
	label := factLabel(fact)
	var raws []string
	for _, v := range vals {
		if !c.Check(v.Version) {
			where := ""
			if v.GPU >= 0 {
				where = ofGPU(f, v.GPU)
			}
			return false, fmt.Sprintf("%s %s%s does not satisfy %s", label, v.Raw, where, text)
		}
		if !contains(raws, v.Raw) {
			raws = append(raws, v.Raw)
		}
	}
	if len(raws) > 1 {
		return true, fmt.Sprintf("%s %s of all GPUs satisfy %s", label, strings.Join(raws, ", "), text)
	}
	return true, fmt.Sprintf("%s %s satisfies %s", label, raws[0], text)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func factLabel(fact string) string {
	switch fact {
	case FactCUDA:
		return "CUDA"
	case FactComputeCapability:
		return "compute capability"
	}
	return fact
}

// ofGPU names GPU i in a reason when there is more than one: " of GPU 1
// (Tesla T4)"; with one GPU there is nothing to disambiguate.
func ofGPU(f *Facts, i int) string {
	if len(f.GPUs) < 2 {
		return ""
	}
	return fmt.Sprintf(" of GPU %d (%s)", i, f.GPUs[i].Name)
}

// coerce turns a 2- or 3-part numeric version into semver.
func coerce(s string) (*semver.Version, error) {
	if !isDriverVersion(s) {
		return nil, fmt.Errorf("not a version like 12.8 or 570.86.15")
	}
	return semver.NewVersion(s)
}

// isDriverVersion reports whether s is 2 or 3 dot-separated runs of 1-9
// digits ("418.39", "570.86.15", "535.104.05").
func isDriverVersion(s string) bool {
	n := numericParts(s)
	return n == 2 || n == 3
}

// isMajorMinor reports whether s is exactly "major.minor" ("12.8", "8.0").
func isMajorMinor(s string) bool { return numericParts(s) == 2 }

// numericParts returns how many dot-separated parts of 1-9 ASCII digits s
// has, or 0 if it is not of that form. Nine digits keep every part well
// inside semver's uint64.
func numericParts(s string) int {
	if s == "" {
		return 0
	}
	parts := strings.Split(s, ".")
	for _, p := range parts {
		if len(p) == 0 || len(p) > 9 {
			return 0
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return 0
			}
		}
	}
	return len(parts)
}
