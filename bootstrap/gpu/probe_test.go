package gpu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeSMI writes an nvidia-smi shell script with the given body into a
// fresh directory and returns the directory, to be put on PATH.
func fakeSMI(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\nPATH=/usr/bin:/bin\nexport PATH\n" + body
	if err := os.WriteFile(filepath.Join(dir, "nvidia-smi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

const header570 = `Sat Nov 28 11:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
`

const header470 = `+-----------------------------------------------------------------------------+
| NVIDIA-SMI 470.57.02    Driver Version: 470.57.02    CUDA Version: 11.4     |
|-------------------------------+----------------------+----------------------+
`

// smiScript answers the full query with query, plain nvidia-smi with
// header, and fails on anything else so that a wrong command line shows.
func smiScript(query, header string) string {
	return `if [ "$#" -eq 0 ]; then
cat <<'EOF'
` + header + `EOF
exit 0
fi
if [ "$1" = "` + queryFull + `" ] && [ "$2" = "` + queryFormat + `" ] && [ "$#" -eq 2 ]; then
cat <<'EOF'
` + query + `EOF
exit 0
fi
echo "unexpected arguments: $*" >&2
exit 99
`
}

func probe(t *testing.T, o Options) (*Facts, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return Probe(ctx, o)
}

func TestProbeNormal(t *testing.T) {
	t.Setenv("PATH", fakeSMI(t, smiScript(
		"NVIDIA A100-SXM4-80GB, 8.0, 570.86.15, 81920\nNVIDIA H100 80GB HBM3, 9.0, 570.86.15, 81559\n", header570)))
	root := fakeRoot(t, procProprietary, 2, a100, h100)
	f, err := probe(t, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	want := &Facts{Driver: "570.86.15", CUDA: "12.8", Source: "nvidia-smi", GPUs: []GPU{
		{Name: "NVIDIA A100-SXM4-80GB", ComputeCapability: "8.0", MemoryMiB: 81920},
		{Name: "NVIDIA H100 80GB HBM3", ComputeCapability: "9.0", MemoryMiB: 81559},
	}}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("Probe = %+v\nwant    %+v", f, want)
	}
	if s := f.String(); s != "NVIDIA A100-SXM4-80GB (compute capability 8.0, 81920 MiB), NVIDIA H100 80GB HBM3 (compute capability 9.0, 81559 MiB); driver 570.86.15, CUDA 12.8" {
		t.Errorf("String = %q", s)
	}
}

// A driver older than 510 rejects compute_cap: the reduced query answers,
// the compute capability is unknown and a note says so.
func TestProbeOldDriverWithoutComputeCap(t *testing.T) {
	old := `case "$1" in
*compute_cap*) echo 'Field "compute_cap" is not a valid field to query.'; echo; echo "Run 'nvidia-smi --help' for usage information."; exit 2;;
` + queryReduced + `) echo "Tesla T4, 470.57.02, 15109"; exit 0;;
esac
`
	t.Run("CUDA from header", func(t *testing.T) {
		t.Setenv("PATH", fakeSMI(t, old+"cat <<'EOF'\n"+header470+"EOF\n"))
		f, err := probe(t, Options{Root: fakeRoot(t, "", 1, t4)})
		if err != nil {
			t.Fatal(err)
		}
		if f.Driver != "470.57.02" || f.CUDA != "11.4" || len(f.GPUs) != 1 || f.GPUs[0] != (GPU{Name: "Tesla T4", MemoryMiB: 15109}) {
			t.Errorf("Probe = %+v", f)
		}
		if len(f.Notes) != 1 || !strings.Contains(f.Notes[0], "compute capability unknown") {
			t.Errorf("notes = %q", f.Notes)
		}
		ok, reason := Holds(f, FactComputeCapability, nil, ">=7.0")
		if ok || reason != "compute capability unknown (the driver is too old to report it)" {
			t.Errorf("Holds = %v, %q", ok, reason)
		}
	})
	t.Run("CUDA from the driver table", func(t *testing.T) {
		t.Setenv("PATH", fakeSMI(t, old+"echo 'Failed to get header' >&2\nexit 3\n"))
		f, err := probe(t, Options{Root: fakeRoot(t, "", 1, t4)})
		if err != nil {
			t.Fatal(err)
		}
		if f.CUDA != "11.4" || len(f.Notes) != 2 || !strings.Contains(f.Notes[1], "CUDA version 11.4 derived from driver 470.57.02") {
			t.Errorf("Probe = %+v, notes %q", f, f.Notes)
		}
	})
}

func TestProbeHeaderWithoutCUDA(t *testing.T) {
	t.Setenv("PATH", fakeSMI(t, smiScript("NVIDIA A10G, 8.6, 535.104.05, 23028\n",
		"| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: N/A  |\n")))
	f, err := probe(t, Options{Root: fakeRoot(t, procOpen, 1, a100)})
	if err != nil {
		t.Fatal(err)
	}
	if f.CUDA != "12.2" || len(f.Notes) != 1 || !strings.Contains(f.Notes[0], "no CUDA Version") {
		t.Errorf("Probe = %+v, notes %q", f, f.Notes)
	}
}

func TestProbeNoGPU(t *testing.T) {
	t.Run("no nvidia-smi, no driver", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		f, err := probe(t, Options{Root: fakeRoot(t, "", 0, nvme)})
		if err != nil {
			t.Fatal(err)
		}
		if f.Source != "none" || f.Driver != "" || f.GPUs == nil || len(f.GPUs) != 0 || len(f.Notes) != 1 {
			t.Errorf("Probe = %#v", f)
		}
		if ok, reason := Holds(f, FactCUDA, nil, ">=12.0"); ok || reason != "no NVIDIA GPU" {
			t.Errorf("Holds = %v, %q", ok, reason)
		}
	})
	t.Run("GPU host, container given none", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		f, err := probe(t, Options{Root: fakeRoot(t, procProprietary, 0, a100)})
		if err != nil {
			t.Fatal(err)
		}
		if f.Driver != "570.86.15" || len(f.GPUs) != 0 {
			t.Errorf("Probe = %#v", f)
		}
	})
	t.Run("nvidia-smi in the image, no driver", func(t *testing.T) {
		t.Setenv("PATH", fakeSMI(t, `echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."; exit 9`))
		f, err := probe(t, Options{Root: fakeRoot(t, "", 0)})
		if err != nil {
			t.Fatal(err)
		}
		if len(f.GPUs) != 0 || len(f.Notes) != 1 || !strings.Contains(f.Notes[0], "couldn't communicate") {
			t.Errorf("Probe = %#v", f)
		}
	})
	t.Run("no devices were found", func(t *testing.T) {
		t.Setenv("PATH", fakeSMI(t, `echo "No devices were found"; exit 6`))
		f, err := probe(t, Options{Root: fakeRoot(t, procProprietary, 1, a100)})
		if err != nil {
			t.Fatal(err)
		}
		if len(f.GPUs) != 0 || f.Driver != "570.86.15" {
			t.Errorf("Probe = %#v", f)
		}
	})
}

func TestProbeGivenGPUButCannotInspect(t *testing.T) {
	t.Run("library mismatch", func(t *testing.T) {
		t.Setenv("PATH", fakeSMI(t, "echo 'Failed to initialize NVML: Driver/library version mismatch'\necho 'NVML library version: 570.124' >&2\nexit 18\n"))
		_, err := probe(t, Options{Root: fakeRoot(t, procProprietary, 1, a100)})
		var se *SMIError
		if !errors.As(err, &se) || se.ExitCode != 18 || se.TimedOut {
			t.Fatalf("err = %#v", err)
		}
		for _, want := range []string{"exit status 18", "Driver/library version mismatch", "NVML library version: 570.124", "do not match the host's driver", EnvOverride} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})
	t.Run("no nvidia-smi", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := probe(t, Options{Root: fakeRoot(t, procProprietary, 1, a100)})
		if err == nil || !strings.Contains(err.Error(), "NVIDIA_DRIVER_CAPABILITIES") || !strings.Contains(err.Error(), "/dev/nvidia3") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("WSL", func(t *testing.T) {
		t.Setenv("PATH", fakeSMI(t, "echo 'Failed to initialize NVML: GPU access blocked by the operating system'\nexit 17\n"))
		root := fakeRoot(t, "", 0)
		if err := os.WriteFile(filepath.Join(root, "dev/dxg"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := probe(t, Options{Root: root})
		var se *SMIError
		if !errors.As(err, &se) || se.ExitCode != 17 || !strings.Contains(err.Error(), "GPU access blocked") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unparsable output", func(t *testing.T) {
		t.Setenv("PATH", fakeSMI(t, smiScript("NVIDIA A100, eight, 570.86.15, 81920\n", header570)))
		_, err := probe(t, Options{Root: fakeRoot(t, procProprietary, 1, a100)})
		if err == nil || !strings.Contains(err.Error(), `compute capability "eight"`) || !strings.Contains(err.Error(), "line 1") {
			t.Fatalf("err = %v", err)
		}
	})
}

// A hung nvidia-smi is killed with its children at the timeout.
func TestProbeTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	t.Setenv("PATH", fakeSMI(t, "sleep 60 &\necho $! > "+pidFile+"\nwait\n"))
	start := time.Now()
	_, err := probe(t, Options{Root: fakeRoot(t, procProprietary, 1, a100), Timeout: 300 * time.Millisecond})
	took := time.Since(start)
	var se *SMIError
	if !errors.As(err, &se) || !se.TimedOut || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Fatalf("err = %v", err)
	}
	if took > 5*time.Second {
		t.Errorf("Probe took %s after a 300ms timeout", took)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the script's child %d outlived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie (an orphan may stay
// a zombie when PID 1 of a test container does not reap).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestProbeContextCancelled(t *testing.T) {
	t.Setenv("PATH", fakeSMI(t, "exec sleep 60\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := Probe(ctx, Options{Root: fakeRoot(t, procProprietary, 1, a100)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's error", err)
	}
}

func TestProbeOverride(t *testing.T) {
	t.Setenv("PATH", fakeSMI(t, "echo must not run >&2\nexit 1\n"))
	path := filepath.Join(t.TempDir(), "gpu.json")
	if err := os.WriteFile(path, []byte(`{"driver":"550.54.14","cuda":"12.4","gpus":[{"name":"Tesla T4","compute_capability":"7.5","memory_mib":15360}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := probe(t, Options{Override: path, Root: fakeRoot(t, procProprietary, 1, a100)})
	if err != nil {
		t.Fatal(err)
	}
	want := &Facts{Driver: "550.54.14", CUDA: "12.4", Source: "override " + path, GPUs: []GPU{{Name: "Tesla T4", ComputeCapability: "7.5", MemoryMiB: 15360}}}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("Probe = %+v", f)
	}
	fp := fingerprint(t, Options{Override: path})
	if !strings.HasPrefix(fp, "override ") {
		t.Errorf("Fingerprint = %q", fp)
	}
	// Reformatting keeps the fingerprint; other content changes it.
	if err := os.WriteFile(path, []byte("{\n  \"gpus\": [{\"memory_mib\": 15360, \"name\": \"Tesla T4\", \"compute_capability\": \"7.5\"}],\n  \"cuda\": \"12.4\", \"driver\": \"550.54.14\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if again := fingerprint(t, Options{Override: path}); again != fp {
		t.Errorf("reformatted file: %q, was %q", again, fp)
	}
	if err := os.WriteFile(path, []byte(`{"driver":"550.54.14","cuda":"12.4","gpus":[{"name":"Tesla T4","compute_capability":"8.0","memory_mib":15360}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if other := fingerprint(t, Options{Override: path}); other == fp {
		t.Errorf("other content kept fingerprint %q", fp)
	}
	if _, err := Fingerprint(Options{Override: filepath.Join(t.TempDir(), "missing.json")}); err == nil || !strings.Contains(err.Error(), "missing.json") || !strings.Contains(err.Error(), EnvOverride) {
		t.Errorf("missing file: err = %v", err)
	}
}

func TestParseQuery(t *testing.T) {
	gpus, drivers, err := parseQuery([]byte("\n  NVIDIA GeForce RTX 4090 , 8.9 , 570.86.15 , 24564  \nGRID A100, Pro, [N/A], 550.54.14, [N/A]\n"), true)
	if err != nil {
		t.Fatal(err)
	}
	want := []GPU{{Name: "NVIDIA GeForce RTX 4090", ComputeCapability: "8.9", MemoryMiB: 24564}, {Name: "GRID A100, Pro"}}
	if !reflect.DeepEqual(gpus, want) || !reflect.DeepEqual(drivers, []string{"570.86.15", "550.54.14"}) {
		t.Errorf("parseQuery = %+v, %q", gpus, drivers)
	}
	for in, msg := range map[string]string{
		"NVIDIA A100, 8.0, 570.86.15":              "want 4 comma-separated fields, got 3",
		", 8.0, 570.86.15, 1":                      "no GPU name",
		"NVIDIA A100, 8, 570.86.15, 1":             `compute capability "8"`,
		"NVIDIA A100, 8.0, 570, 1":                 `driver version "570"`,
		"NVIDIA A100, 8.0, 570.86.15, 80 GiB":      `memory "80 GiB"`,
		"ok, 8.0, 570.86.15, 1\nNVIDIA A100, 8.0,": "line 2",
	} {
		if _, _, err := parseQuery([]byte(in), true); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("parseQuery(%q) err = %v, want %q", in, err, msg)
		}
	}
}

func TestCUDAForDriver(t *testing.T) {
	for driver, want := range map[string]string{
		"580.82.07": "13.0", "575.57.08": "12.9", "570.86.15": "12.8", "570.26": "12.8", "565.57.01": "12.6",
		"550.54.14": "12.4", "550.54.13": "12.3", "535.104.05": "12.2", "470.57.02": "11.4", "418.39": "10.1",
		"384.81": "9.0", "384.80": "", "nonsense": "",
	} {
		got, ok := cudaForDriver(driver)
		if got != want || ok != (want != "") {
			t.Errorf("cudaForDriver(%q) = %q, %v; want %q", driver, got, ok, want)
		}
	}
}

func TestParseHeader(t *testing.T) {
	for in, want := range map[string][2]string{
		header570: {"570.86.15", "12.8"},
		header470: {"470.57.02", "11.4"},
		"| NVIDIA-SMI 580.65.06              Driver Version: 580.65.06      CUDA Version: 13.0     |": {"580.65.06", "13.0"},
		"| NVIDIA-SMI 384.81   Driver Version: 384.81  |":                                             {"384.81", ""},
		"CUDA Version: N/A": {"", ""},
		"":                  {"", ""},
	} {
		d, c := parseHeader([]byte(in))
		if [2]string{d, c} != want {
			t.Errorf("parseHeader(%q) = %q, %q; want %q", in, d, c, want)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	f.Add([]byte("NVIDIA A100-SXM4-80GB, 8.0, 570.86.15, 81920\nNVIDIA H100, 9.0, 570.86.15, [N/A]\n"), true)
	f.Add([]byte("Tesla T4, 470.57.02, 15109\n"), false)
	f.Add([]byte("a,b,c,d,e,f\n\n,,,\n"), true)
	f.Fuzz(func(t *testing.T, out []byte, withCC bool) {
		gpus, drivers, err := parseQuery(out, withCC)
		if err != nil {
			return
		}
		if len(gpus) != len(drivers) {
			t.Fatalf("%d GPUs, %d drivers", len(gpus), len(drivers))
		}
		for i, g := range gpus {
			if strings.TrimSpace(g.Name) == "" || g.MemoryMiB < 0 {
				t.Fatalf("bad GPU %+v", g)
			}
			if g.ComputeCapability != "" {
				if !withCC {
					t.Fatalf("compute capability without the field: %+v", g)
				}
				if _, err := coerce(g.ComputeCapability); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := coerce(drivers[i]); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte(header570))
	f.Add([]byte(header470))
	f.Add([]byte("Driver Version: 1.2.3.4 CUDA Version: 12.8.1"))
	f.Fuzz(func(t *testing.T, out []byte) {
		d, c := parseHeader(out)
		if d != "" {
			if _, err := coerce(d); err != nil {
				t.Fatal(err)
			}
			if cuda, ok := cudaForDriver(d); ok && !isMajorMinor(cuda) {
				t.Fatalf("driver %q maps to CUDA %q", d, cuda)
			}
		}
		if c != "" && !isMajorMinor(c) {
			t.Fatalf("cuda %q", c)
		}
	})
}
