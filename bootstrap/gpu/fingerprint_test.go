package gpu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pciDev is one PCI function of a fake sysfs tree. When the fake driver is
// loaded, NVIDIA display devices are bound to it unless driver names
// another one.
type pciDev struct {
	addr, vendor, class, device string
	driver                      string
}

var (
	a100      = pciDev{"0000:07:00.0", "0x10de", "0x030200", "0x20b2", ""}
	a100b     = pciDev{"0000:0f:00.0", "0x10de", "0x030200", "0x20b2", ""}
	h100      = pciDev{"0000:47:00.0", "0x10de", "0x030200", "0x2330", ""}
	t4        = pciDev{"0000:00:1e.0", "0x10de", "0x030000", "0x1eb8", ""}
	gpuAudio  = pciDev{"0000:07:00.1", "0x10de", "0x040300", "0x10f0", ""} // HDMI audio function of a GPU
	aspeedVGA = pciDev{"0000:02:00.0", "0x1a03", "0x030000", "0x2000", ""} // BMC display
	nvme      = pciDev{"0000:41:00.0", "0x144d", "0x010802", "0xa80a", ""}
)

const (
	procProprietary = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Fri Jan 10 22:22:45 UTC 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
	procOpen        = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build  (dvs-builder@U16-I3-B03-4-3)  Sat Aug 19 01:13:36 UTC 2023\nGCC version:  gcc version 11.4.0\n"
)

// fakeRoot builds a tree shaped like the real one: devices live under
// /sys/devices/pci0000:00/ and /sys/bus/pci/devices/ holds symlinks to them.
func fakeRoot(t testing.TB, proc string, nodes int, devs ...pciDev) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	bus := filepath.Join(root, "sys/bus/pci/devices")
	must(os.MkdirAll(bus, 0o755))
	for _, d := range devs {
		real := filepath.Join(root, "sys/devices/pci0000:00", d.addr)
		must(os.MkdirAll(real, 0o755))
		for name, v := range map[string]string{"vendor": d.vendor, "class": d.class, "device": d.device} {
			if v != "" {
				must(os.WriteFile(filepath.Join(real, name), []byte(v+"\n"), 0o444))
			}
		}
		must(os.Symlink(filepath.Join("../../../devices/pci0000:00", d.addr), filepath.Join(bus, d.addr)))
		driver := d.driver
		if driver == "" && proc != "" && d.vendor == "0x10de" && strings.HasPrefix(d.class, "0x03") {
			driver = "nvidia"
		}
		if driver != "" {
			drv := filepath.Join(root, "sys/bus/pci/drivers", driver)
			must(os.MkdirAll(drv, 0o755))
			must(os.Symlink(filepath.Join("../../../../devices/pci0000:00", d.addr), filepath.Join(drv, d.addr)))
		}
	}
	if proc != "" {
		must(os.MkdirAll(filepath.Join(root, "proc/driver/nvidia"), 0o755))
		must(os.WriteFile(filepath.Join(root, procVersionPath), []byte(proc), 0o444))
		drv := filepath.Join(root, "sys/bus/pci/drivers/nvidia")
		must(os.MkdirAll(drv, 0o755))
		for _, f := range []string{"bind", "unbind", "new_id", "remove_id", "uevent"} {
			must(os.WriteFile(filepath.Join(drv, f), nil, 0o200))
		}
		must(os.Symlink("../../../../module/nvidia", filepath.Join(drv, "module")))
	}
	must(os.MkdirAll(filepath.Join(root, "dev"), 0o755))
	must(os.WriteFile(filepath.Join(root, "dev/null"), nil, 0o644))
	if nodes > 0 {
		for _, n := range []string{"nvidiactl", "nvidia-uvm", "nvidia-modeset"} {
			must(os.WriteFile(filepath.Join(root, "dev", n), nil, 0o644))
		}
	}
	for i := 0; i < nodes; i++ {
		// Containers get the host's minor numbers: GPU 3 is /dev/nvidia3.
		must(os.WriteFile(filepath.Join(root, "dev", "nvidia"+string(rune('3'+i))), nil, 0o644))
	}
	return root
}

func fingerprint(t *testing.T, o Options) string {
	t.Helper()
	fp, err := Fingerprint(o)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

func TestFingerprint(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proc  string
		nodes int
		devs  []pciDev
		want  string
	}{
		{"no GPU, no driver", "", 0, []pciDev{nvme, aspeedVGA}, NoGPU},
		{"empty sysfs", "", 0, nil, NoGPU},
		{"one GPU", procProprietary, 1, []pciDev{nvme, t4, aspeedVGA}, "nvidia driver=570.86.15 pci=10de:1eb8 nodes=1"},
		{"two GPUs of one kind and its audio function", procProprietary, 2, []pciDev{a100, gpuAudio, a100b, nvme}, "nvidia driver=570.86.15 pci=10de:20b2 nodes=2"},
		{"mixed GPUs, sorted", procOpen, 2, []pciDev{h100, a100, nvme}, "nvidia driver=535.104.05 pci=10de:20b2,10de:2330 nodes=2"},
		{"GPU host, container given none", procProprietary, 0, []pciDev{a100, a100b}, "nvidia driver=570.86.15 pci=10de:20b2 nodes=0"},
		{"GPU without a loaded driver", "", 0, []pciDev{t4}, "nvidia driver=none pci=10de:1eb8 nodes=0"},
		{"non-NVIDIA display only", "", 0, []pciDev{aspeedVGA}, NoGPU},
		{"unparsable procfs", "garbage\n", 0, nil, "nvidia driver=unparsed-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRoot(t, tc.proc, tc.nodes, tc.devs...)
			got := fingerprint(t, Options{Root: root})
			if !strings.HasPrefix(got, tc.want) || (!strings.HasSuffix(tc.want, "-") && got != tc.want) {
				t.Errorf("Fingerprint = %q, want %q", got, tc.want)
			}
			if again := fingerprint(t, Options{Root: root}); again != got {
				t.Errorf("not stable: %q then %q", got, again)
			}
		})
	}
}

// The same hardware seen on two hosts with other bus addresses and another
// device order fingerprints the same; one more device node does not.
func TestFingerprintIgnoresAddressesNotNodes(t *testing.T) {
	x := fingerprint(t, Options{Root: fakeRoot(t, procProprietary, 1, a100, h100)})
	h100moved := h100
	h100moved.addr = "0000:c1:00.0"
	y := fingerprint(t, Options{Root: fakeRoot(t, procProprietary, 1, h100moved, a100)})
	if x != y {
		t.Errorf("bus addresses changed the fingerprint: %q vs %q", x, y)
	}
	z := fingerprint(t, Options{Root: fakeRoot(t, procProprietary, 2, a100, h100)})
	if z == x {
		t.Errorf("device node count did not change the fingerprint: %q", z)
	}
	d := fingerprint(t, Options{Root: fakeRoot(t, procOpen, 1, a100, h100)})
	if d == x {
		t.Errorf("driver version did not change the fingerprint: %q", d)
	}
}

// With the driver loaded, only GPUs bound to it count: one passed through
// to a VM (vfio-pci) is not usable here. Without the drivers directory the
// whole bus is scanned.
func TestFingerprintBoundDevices(t *testing.T) {
	passthrough := h100
	passthrough.driver = "vfio-pci"
	root := fakeRoot(t, procProprietary, 1, a100, passthrough, nvme)
	if got := fingerprint(t, Options{Root: root}); got != "nvidia driver=570.86.15 pci=10de:20b2 nodes=1" {
		t.Errorf("Fingerprint = %q", got)
	}
	if err := os.RemoveAll(filepath.Join(root, "sys/bus/pci/drivers")); err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, Options{Root: root}); got != "nvidia driver=570.86.15 pci=10de:20b2,10de:2330 nodes=1" {
		t.Errorf("Fingerprint without sysfs drivers = %q", got)
	}
}

func TestFingerprintWSL(t *testing.T) {
	root := fakeRoot(t, "", 0)
	if err := os.WriteFile(filepath.Join(root, "dev/dxg"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, Options{Root: root}); got != "nvidia driver=none pci= nodes=0 wsl" {
		t.Errorf("Fingerprint = %q", got)
	}
}

func TestFingerprintBadSysfs(t *testing.T) {
	bad := t4
	bad.class = "display"
	bad.driver = "nvidia"
	root := fakeRoot(t, procProprietary, 1, bad)
	_, err := Fingerprint(Options{Root: root})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, "sys/bus/pci/devices", t4.addr, "class")) || !strings.Contains(err.Error(), `"display"`) {
		t.Fatalf("err = %v, want one naming the class file and its content", err)
	}
	// A device missing its attributes (vanished mid-glob) is skipped.
	gone := t4
	gone.vendor = ""
	if got := fingerprint(t, Options{Root: fakeRoot(t, "", 0, gone)}); got != NoGPU {
		t.Errorf("Fingerprint = %q, want %q", got, NoGPU)
	}
}

// Fingerprint is the fast path: it must never start nvidia-smi.
func TestFingerprintStartsNoProcess(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	bin := fakeSMI(t, "touch "+marker+"\nexit 0\n")
	t.Setenv("PATH", bin)
	root := fakeRoot(t, procProprietary, 1, a100)
	fingerprint(t, Options{Root: root})
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("Fingerprint ran nvidia-smi")
	}
}

func TestParseProcVersion(t *testing.T) {
	for in, want := range map[string]string{
		procProprietary: "570.86.15",
		procOpen:        "535.104.05",
		"NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  550.54.14  Release Build  (dvs-builder@U16-T02-35-3)  Thu Feb 22 01:25:25 UTC 2024\n": "550.54.14",
		"NVRM version: NVIDIA UNIX x86_64 Kernel Module  418.39  Sat Feb  9 19:49:58 CST 2019\n":                                                         "418.39",
		"GCC version: gcc version 12.2.0\n":                      "",
		"NVRM version: NVIDIA UNIX x86_64 Kernel Module  \n":     "",
		"NVRM version: something 12.2.0 with GCC after it 5.4\n": "12.2.0",
	} {
		got, ok := parseProcVersion([]byte(in))
		if got != want || ok != (want != "") {
			t.Errorf("parseProcVersion(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func FuzzParseProcVersion(f *testing.F) {
	f.Add([]byte(procProprietary))
	f.Add([]byte(procOpen))
	f.Add([]byte("NVRM version: 1.2.3.4 5.6\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, ok := parseProcVersion(data)
		if ok != (v != "") {
			t.Fatalf("ok=%v with %q", ok, v)
		}
		if ok {
			if _, err := coerce(v); err != nil {
				t.Fatalf("parsed %q does not coerce: %v", v, err)
			}
		}
	})
}
