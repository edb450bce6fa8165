package gpu

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// NVIDIA's PCI vendor id, and the PCI base class of display controllers
// (0x0300 VGA, 0x0302 3D controller: data-centre GPUs have no display).
const (
	vendorNVIDIA = 0x10de
	classDisplay = 0x03
)

// Paths read by Fingerprint and Probe, relative to Options.Root.
const (
	procVersionPath = "/proc/driver/nvidia/version"
	pciDevicesGlob  = "/sys/bus/pci/devices/*"
	devNodesGlob    = "/dev/nvidia[0-9]*"
	devDXGPath      = "/dev/dxg" // WSL2's paravirtualised GPU: no PCI device, no procfs entry
)

// Fingerprint returns a short string identifying this machine's NVIDIA
// hardware and driver, for the fast path: it starts no process and reads
// /proc/driver/nvidia/version, the vendor, class and device files of the
// PCI devices bound to the nvidia driver in sysfs (of every PCI device when
// no nvidia driver is registered; see pciGPUs), and the names of the
// /dev/nvidiaN nodes. It is NoGPU when none of these show an NVIDIA driver
// or GPU. It does not see whether nvidia-smi is on PATH (the container
// runtime mounts it with the driver; an image could also ship one).
//
// The string holds the driver version, the sorted distinct PCI ids of
// NVIDIA display controllers and the number of GPU device nodes. Distinct
// ids, not a count or bus addresses, because sysfs is not namespaced: a
// container sees every GPU of its host, and two hosts of one type should
// share a fingerprint. The device nodes are what the container runtime
// actually gave this container, so a GPU-less container on a GPU host gets
// a fingerprint of its own. (On bare metal the nodes may appear only after
// the first nvidia-smi run; that costs one extra probe, once.)
//
// With Options.Override set, the fingerprint is derived from the override
// file's decoded content, and a bad file is an error naming it.
//
// An error means the tree could not be read or holds something sysfs never
// does; callers treat it as a fast-path miss.
func Fingerprint(o Options) (string, error) {
	if o.Override != "" {
		f, err := LoadOverride(o.Override)
		if err != nil {
			return "", err
		}
		return overrideFingerprint(f), nil
	}
	driver, err := readProcDriver(o.Root)
	if err != nil {
		return "", err
	}
	ids, err := pciGPUs(o.Root)
	if err != nil {
		return "", err
	}
	nodes, err := filepath.Glob(filepath.Join(rootOf(o.Root), devNodesGlob))
	if err != nil {
		return "", fmt.Errorf("gpu fingerprint: %w", err)
	}
	nodes = gpuNodes(nodes)
	wsl := exists(filepath.Join(rootOf(o.Root), devDXGPath))
	if driver == "" && len(ids) == 0 && len(nodes) == 0 && !wsl {
		return NoGPU, nil
	}
	if driver == "" {
		driver = "none"
	}
	s := fmt.Sprintf("nvidia driver=%s pci=%s nodes=%d", driver, strings.Join(ids, ","), len(nodes))
	if wsl {
		s += " wsl"
	}
	return s, nil
}

func rootOf(root string) string {
	if root == "" {
		return "/"
	}
	return root
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// gpuNodes keeps /dev/nvidiaN names whose suffix is all digits: the glob
// also matches nothing else today, but /dev/nvidia0-foo would not be a GPU.
func gpuNodes(paths []string) []string {
	out := paths[:0]
	for _, p := range paths {
		n := strings.TrimPrefix(filepath.Base(p), "nvidia")
		if _, err := strconv.ParseUint(n, 10, 32); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// readProcDriver returns the driver version from /proc/driver/nvidia/version,
// "" when the file does not exist (no driver loaded). A file it cannot parse
// yields "unparsed-<hash of its first line>": still stable for the
// fingerprint, and Probe says so in a note.
func readProcDriver(root string) (string, error) {
	path := filepath.Join(rootOf(root), procVersionPath)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("gpu: reading driver version: %w", err)
	}
	if v, ok := parseProcVersion(data); ok {
		return v, nil
	}
	first, _, _ := strings.Cut(string(data), "\n")
	sum := sha256.Sum256([]byte(first))
	return "unparsed-" + hex.EncodeToString(sum[:4]), nil
}

// parseProcVersion extracts the driver version from the content of
// /proc/driver/nvidia/version, whose first line reads like
//
//	NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Fri Jan 10 ...
//	NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build ...
//
// It returns the first token of the NVRM line that is a 2- or 3-part
// numeric version; false when there is none.
func parseProcVersion(data []byte) (string, bool) {
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "NVRM version:")
		if !ok {
			continue
		}
		for _, tok := range strings.Fields(rest) {
			if isDriverVersion(tok) {
				return tok, true
			}
		}
		return "", false
	}
	return "", false
}

// pciGPUs returns the sorted distinct "vendor:device" ids (lower-case hex,
// "10de:2330") of NVIDIA display controllers in sysfs.
//
// When the nvidia kernel driver is registered, only the devices bound to it
// (/sys/bus/pci/drivers/nvidia/<address>) are candidates: those are the
// GPUs CUDA can use (one passed through to a VM is bound to vfio-pci
// instead), and a server's hundred other PCI functions cost nothing.
// Otherwise every device in /sys/bus/pci/devices is a candidate, and only
// NVIDIA ones have their class and device read.
func pciGPUs(root string) ([]string, error) {
	r := rootOf(root)
	devices := filepath.Join(r, "/sys/bus/pci/devices")
	var dirs []string
	names, err := readDirNames(filepath.Join(r, "/sys/bus/pci/drivers/nvidia"))
	switch {
	case err == nil:
		for _, n := range names {
			if strings.Count(n, ":") == 2 { // 0000:07:00.0; skip bind, unbind, module, ...
				dirs = append(dirs, filepath.Join(devices, n))
			}
		}
	case errors.Is(err, fs.ErrNotExist):
		if dirs, err = filepath.Glob(filepath.Join(r, pciDevicesGlob)); err != nil {
			return nil, fmt.Errorf("gpu fingerprint: %w", err)
		}
	default:
		return nil, fmt.Errorf("gpu fingerprint: %w", err)
	}
	seen := map[string]bool{}
	for _, dir := range dirs {
		vendor, ok, err := readHex(filepath.Join(dir, "vendor"))
		if err != nil {
			return nil, err
		}
		if !ok || vendor != vendorNVIDIA {
			continue
		}
		class, ok, err := readHex(filepath.Join(dir, "class"))
		if err != nil {
			return nil, err
		}
		// class is 0xBBSSPP: base class, subclass, programming interface.
		if !ok || class>>16 != classDisplay {
			continue
		}
		device, ok, err := readHex(filepath.Join(dir, "device"))
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		seen[fmt.Sprintf("%04x:%04x", vendor, device)] = true
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

func readDirNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// readHex reads a sysfs attribute such as "0x10de\n". A missing file is not
// an error (ok is false): devices can vanish between the glob and the read,
// and some PCI functions lack attributes.
func readHex(path string) (v uint64, ok bool, err error) {
	data, err := readSmall(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("gpu fingerprint: %w", err)
	}
	s := strings.TrimSpace(string(data))
	h, found := strings.CutPrefix(s, "0x")
	if !found || h == "" {
		return 0, false, fmt.Errorf("gpu fingerprint: %s holds %q, not a hex number like 0x10de", path, truncate(s, 40))
	}
	v, err = strconv.ParseUint(h, 16, 32)
	if err != nil {
		return 0, false, fmt.Errorf("gpu fingerprint: %s holds %q, not a hex number like 0x10de", path, truncate(s, 40))
	}
	return v, true, nil
}

// readSmall reads the first bytes of a small file (a sysfs attribute) with
// three system calls, where os.ReadFile spends six (fstat for the size,
// fcntl for the poller, a read to see EOF): on the fast path this is most
// of the fingerprint's cost. Content past 64 bytes is not read; no sysfs
// attribute read here is that long, and readHex rejects what was cut.
func readSmall(path string) ([]byte, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	var buf [64]byte
	var n int
	for {
		n, err = syscall.Read(fd, buf[:])
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	return append([]byte(nil), buf[:n]...), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
