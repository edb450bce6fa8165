package gpu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/Masterminds/semver/v3"
)

func TestHolds(t *testing.T) {
	a100 := GPU{Name: "NVIDIA A100-SXM4-80GB", ComputeCapability: "8.0", MemoryMiB: 81920}
	h100 := GPU{Name: "NVIDIA H100 80GB HBM3", ComputeCapability: "9.0", MemoryMiB: 81559}
	t4 := GPU{Name: "Tesla T4", ComputeCapability: "7.5", MemoryMiB: 15360}
	one := &Facts{Driver: "570.86.15", CUDA: "12.8", GPUs: []GPU{a100}}
	mixed := &Facts{Driver: "535.104.05", CUDA: "12.2", GPUs: []GPU{a100, t4}}
	big := &Facts{Driver: "570.86.15", CUDA: "12.8", GPUs: []GPU{a100, h100}}
	none := &Facts{Driver: "570.86.15", GPUs: []GPU{}}
	old := &Facts{Driver: "470.57.02", CUDA: "11.4", GPUs: []GPU{{Name: "Tesla K80"}}}
	noCUDA := &Facts{Driver: "384.81", GPUs: []GPU{t4}}
	twoPart := &Facts{Driver: "418.39", CUDA: "10.1", GPUs: []GPU{t4}}

	for _, tc := range []struct {
		f          *Facts
		fact, cons string
		ok         bool
		reason     string
	}{
		{one, "cuda", ">=12.8", true, "CUDA 12.8 satisfies >=12.8"},
		{one, "cuda", ">=12.9", false, "CUDA 12.8 does not satisfy >=12.9"},
		{one, "cuda", ">= 12.0, < 13", true, "CUDA 12.8 satisfies >= 12.0, < 13"},
		{one, "compute-capability", ">=8.0", true, "compute capability 8.0 satisfies >=8.0"},
		{one, "driver", ">=570.86.15", true, "driver 570.86.15 satisfies >=570.86.15"},
		{one, "driver", ">=570.124", false, "driver 570.86.15 does not satisfy >=570.124"},
		{one, "driver", "~570", true, "driver 570.86.15 satisfies ~570"},
		{mixed, "compute-capability", ">=8.0", false, "compute capability 7.5 of GPU 1 (Tesla T4) does not satisfy >=8.0"},
		{mixed, "compute-capability", ">=7.0", true, "compute capability 8.0, 7.5 of all GPUs satisfy >=7.0"},
		{mixed, "driver", ">=535.104.05", true, "driver 535.104.05 satisfies >=535.104.05"},
		{mixed, "driver", ">535.104.4", true, "driver 535.104.05 satisfies >535.104.4"},
		{big, "compute-capability", ">=8.0", true, "compute capability 8.0, 9.0 of all GPUs satisfy >=8.0"},
		{big, "compute-capability", "<9.0", false, "compute capability 9.0 of GPU 1 (NVIDIA H100 80GB HBM3) does not satisfy <9.0"},
		{none, "cuda", ">=11", false, "no NVIDIA GPU"},
		{none, "driver", ">=1", false, "no NVIDIA GPU"},
		{none, "compute-capability", ">=1", false, "no NVIDIA GPU"},
		{nil, "compute-capability", ">=1", false, "no NVIDIA GPU"},
		{old, "compute-capability", ">=3.0", false, "compute capability unknown (the driver is too old to report it)"},
		{old, "cuda", ">=11.4", true, "CUDA 11.4 satisfies >=11.4"},
		{noCUDA, "cuda", ">=9", false, "CUDA unknown"},
		{twoPart, "driver", ">=418.39.0", true, "driver 418.39 satisfies >=418.39.0"},
		{twoPart, "compute-capability", "7.5", true, "compute capability 7.5 satisfies 7.5"},
		{one, "vram", ">=24", false, `unknown condition fact "vram" (want cuda, compute-capability or driver)`},
	} {
		c, err := semver.NewConstraint(tc.cons)
		if err != nil {
			t.Fatal(err)
		}
		ok, reason := Holds(tc.f, tc.fact, c, tc.cons)
		if ok != tc.ok || reason != tc.reason {
			t.Errorf("Holds(%v, %s %s) = %v, %q\n want %v, %q", tc.f, tc.fact, tc.cons, ok, reason, tc.ok, tc.reason)
		}
		// A nil constraint is parsed from the text, with the same answer.
		if ok2, reason2 := Holds(tc.f, tc.fact, nil, tc.cons); ok2 != ok || reason2 != reason {
			t.Errorf("Holds with nil constraint = %v, %q; with parsed = %v, %q", ok2, reason2, ok, reason)
		}
	}
	if ok, reason := Holds(one, "cuda", nil, ">=twelve"); ok || !strings.Contains(reason, "not a semver constraint") {
		t.Errorf("bad text: %v, %q", ok, reason)
	}
}

func TestValues(t *testing.T) {
	f := &Facts{Driver: "535.104.05", CUDA: "12.2", GPUs: []GPU{{Name: "a", ComputeCapability: "8.6"}, {Name: "b", ComputeCapability: "12.0"}}}
	vals, err := Values(f, FactComputeCapability)
	if err != nil || len(vals) != 2 || vals[1].GPU != 1 || vals[1].Version.String() != "12.0.0" {
		t.Fatalf("Values = %+v, %v", vals, err)
	}
	vals, err = Values(f, FactDriver)
	if err != nil || len(vals) != 1 || vals[0].GPU != -1 || vals[0].Version.String() != "535.104.5" || vals[0].Raw != "535.104.05" {
		t.Fatalf("Values = %+v, %v", vals, err)
	}
}

func TestParseOverride(t *testing.T) {
	good := map[string]*Facts{
		`{"driver":"570.86.15","cuda":"12.8","gpus":[{"name":"NVIDIA A100","compute_capability":"8.0","memory_mib":81920}]}`: {
			Driver: "570.86.15", CUDA: "12.8", GPUs: []GPU{{Name: "NVIDIA A100", ComputeCapability: "8.0", MemoryMiB: 81920}}},
		`{"gpus":[]}`:            {GPUs: []GPU{}},
		` {} `:                   {GPUs: []GPU{}},
		`{"driver":"570.86.15"}`: {Driver: "570.86.15", GPUs: []GPU{}},
		`{"driver":"418.39","cuda":"10.1","gpus":[{"name":"Tesla T4","compute_capability":"7.5"}]}`: {
			Driver: "418.39", CUDA: "10.1", GPUs: []GPU{{Name: "Tesla T4", ComputeCapability: "7.5"}}},
	}
	for in, want := range good {
		f, err := ParseOverride("gpu.json", []byte(in))
		if err != nil {
			t.Errorf("ParseOverride(%s): %v", in, err)
			continue
		}
		want.Source = "override gpu.json"
		if f.String() != want.String() || f.Driver != want.Driver || f.CUDA != want.CUDA || len(f.GPUs) != len(want.GPUs) || f.Source != want.Source {
			t.Errorf("ParseOverride(%s) = %+v, want %+v", in, f, want)
		}
	}
	bad := map[string]string{
		``:                          "want a JSON object",
		`[]`:                        "want a JSON object",
		`null`:                      "want a JSON object",
		`{"driver":"570.86.15"} {}`: "line 1 column 24: unexpected data after the JSON object",
		"{\n  \"driver\": 570\n}":   "line 2 column 15: driver must be a string, not JSON number",
		`{"driver":"570.86.15",}`:   "line 1 column 23: invalid character '}'",
		`{"driver":"570.86.15"`:     "unexpected end of file",
		`{"drvier":"570.86.15"}`:    `unknown field "drvier" (allowed: driver, cuda, gpus`,
		`{"gpus":[{"name":"x","compute_capability":"8.0","vram":1}]}`:                                                                              `unknown field "vram"`,
		"{\"driver\":\"1.0\",\n \"driver\":\"570.86.15\"}":                                                                                         `line 2 column 9: field driver appears twice`,
		`{"driver":"570.86.15","cuda":"12.8","gpus":[{"name":"a","compute_capability":"8.0"},{"name":"b","compute_capability":"8.0","name":"c"}]}`: "field gpus[1].name appears twice",
		`{"driver":"570"}`:  `driver "570" is not a driver version`,
		`{"cuda":"12.8.1"}`: `cuda "12.8.1" is not a CUDA version`,
		`{"cuda":"12.8","gpus":[{"name":"a","compute_capability":"8.0"}]}`:                                       "driver is required",
		`{"driver":"570.86.15","gpus":[{"name":"a","compute_capability":"8.0"}]}`:                                "cuda is required",
		`{"driver":"570.86.15","cuda":"12.8","gpus":[{"name":" ","compute_capability":"8.0"}]}`:                  "gpus[0].name",
		`{"driver":"570.86.15","cuda":"12.8","gpus":[{"name":"a","compute_capability":"8"}]}`:                    `gpus[0].compute_capability "8"`,
		`{"driver":"570.86.15","cuda":"12.8","gpus":[{"name":"a","compute_capability":""}]}`:                     `gpus[0].compute_capability ""`,
		`{"driver":"570.86.15","cuda":"12.8","gpus":[{"name":"a","compute_capability":"8.0","memory_mib":-1}]}`:  "gpus[0].memory_mib -1 is negative",
		`{"driver":"570.86.15","cuda":"12.8","gpus":[{"name":"a","compute_capability":"8.0","memory_mib":1.5}]}`: "gpus.memory_mib must be an integer",
	}
	for in, msg := range bad {
		_, err := ParseOverride("/tmp/gpu.json", []byte(in))
		if err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), "/tmp/gpu.json") {
			t.Errorf("ParseOverride(%q) err = %v, want %q naming the file", in, err, msg)
		}
	}
}

func TestLoadOverrideFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.json")
	if err := os.WriteFile(path, []byte("{\n\"driver\": \"570.86.15\",\n\"cuda\": \"12.8\",\n\"gpus\": [{\"name\": \"x\", \"compute_capability\": \"8.0\", \"extra\": 1}]\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadOverride(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"extra"`) {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParseOverride(f *testing.F) {
	f.Add([]byte(`{"driver":"570.86.15","cuda":"12.8","gpus":[{"name":"NVIDIA A100","compute_capability":"8.0","memory_mib":81920}]}`))
	f.Add([]byte(`{"gpus":[]}`))
	f.Add([]byte(`{"driver":"570.86.15"} x`))
	f.Add([]byte("{\n\"gpus\": [{\"name\": 1}]}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		facts, err := ParseOverride("fuzz.json", data)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		// Every accepted file evaluates conditions without error surprises
		// and fingerprints stably.
		for _, fact := range []string{FactCUDA, FactComputeCapability, FactDriver} {
			_, err := Values(facts, fact)
			if len(facts.GPUs) > 0 && err != nil {
				t.Fatalf("Values(%s) on accepted facts: %v", fact, err)
			}
			Holds(facts, fact, nil, ">=1.0")
		}
		if first, second := overrideFingerprint(facts), overrideFingerprint(facts); first != second {
			t.Fatalf("fingerprint not stable: %q then %q", first, second)
		}
	})
}

func TestHoldsWithoutText(t *testing.T) {
	c, _ := semver.NewConstraint(">=8.0")
	f := &Facts{Driver: "570.86.15", CUDA: "12.8", GPUs: []GPU{{Name: "Tesla T4", ComputeCapability: "7.5"}}}
	if ok, reason := Holds(f, FactComputeCapability, c, ""); ok || reason != "compute capability 7.5 does not satisfy >=8.0" {
		t.Errorf("Holds = %v, %q", ok, reason)
	}
}
