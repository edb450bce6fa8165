// Package synthstack generates synthetic Python stacks for end-to-end tests
// and benchmarks: wheels of any shape (many small modules, data files,
// large incompressible blobs, namespace packages, console scripts, modules
// that fail to import), the PEP 751 lock that pins them, and the manifest
// that groups them.
//
// Generation is deterministic: the same Spec gives the same bytes, so two
// runs of a test produce the same sha256es and the same generation id.
// Wheels are streamed to disk, so a wheel costs memory in proportion to its
// largest member, not its size.
//
// Functions are safe for concurrent use; they share no state.
package synthstack

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// Spec describes one synthetic wheel.
type Spec struct {
	Name, Version string
	// PyFiles small Python modules, spread over subpackages of 50.
	PyFiles int
	// DataFiles non-Python files (type stubs, headers, JSON) of DataSize
	// bytes each.
	DataFiles int
	DataSize  int
	// Blobs large incompressible files (shared libraries, weights) of
	// BlobSize bytes each, stored uncompressed as real wheels store them.
	Blobs    int
	BlobSize int
	// Namespace puts the package under a shared namespace directory with
	// no __init__.py (as nvidia-* wheels do under nvidia/).
	Namespace string
	// ImportError makes the top-level module raise ImportError when
	// imported (a wheel built against the wrong ABI, say).
	ImportError bool
	// ConsoleScript adds a console script named after the package.
	ConsoleScript bool
	// Init is Python source appended to the top-level __init__.py (imports
	// of other packages, optional ones in try blocks).
	Init string
	// Seed varies the content; the name is mixed in too.
	Seed uint64
}

// Module is the importable top-level name the wheel provides (for a
// namespace package, the dotted path below the namespace).
func (s Spec) Module() string {
	m := strings.NewReplacer("-", "_", ".", "_").Replace(s.Name)
	if s.Namespace != "" {
		return s.Namespace + "." + m
	}
	return m
}

// Wheel is one generated wheel file.
type Wheel struct {
	Spec     Spec
	Filename string
	Path     string
	SHA256   string
	Size     int64 // bytes of the .whl
	Files    int   // members, dist-info included
	Unpacked int64 // bytes of all members
}

// wheelSpec builds the wheeltest description of s.
func (s Spec) wheelSpec() wheeltest.Spec {
	rng := rand.New(rand.NewPCG(s.Seed, nameSeed(s.Name)))
	mod := strings.NewReplacer("-", "_", ".", "_").Replace(s.Name)
	root := mod
	if s.Namespace != "" {
		root = s.Namespace + "/" + mod
	}
	var files []wheeltest.File
	init := fmt.Sprintf("NAME = %q\nVERSION = %q\n", s.Name, s.Version)
	if s.ImportError {
		init = fmt.Sprintf("raise ImportError(%q)\n", "synthetic "+s.Name+" is built for another ABI")
	}
	init += s.Init
	files = append(files, wheeltest.File{Name: root + "/__init__.py", Data: []byte(init)})
	for i := 0; i < s.PyFiles; i++ {
		sub := fmt.Sprintf("%s/sub%03d", root, i/50)
		if i%50 == 0 {
			files = append(files, wheeltest.File{Name: sub + "/__init__.py", Data: []byte("")})
		}
		body := fmt.Sprintf("# generated module %d of %s\nK = %d\n\ndef f(x):\n    return x * K + %d\n", i, s.Name, rng.IntN(1000), i)
		files = append(files, wheeltest.File{Name: fmt.Sprintf("%s/m%05d.py", sub, i), Data: []byte(body)})
	}
	for i := 0; i < s.DataFiles; i++ {
		data := make([]byte, s.DataSize)
		fillText(rng, data)
		files = append(files, wheeltest.File{Name: fmt.Sprintf("%s/data/d%03d/f%05d.pyi", root, i/200, i), Data: data})
	}
	for i := 0; i < s.Blobs; i++ {
		data := make([]byte, s.BlobSize)
		fillRandom(rng, data)
		files = append(files, wheeltest.File{Name: fmt.Sprintf("%s/lib/lib%s_%d.so", root, mod, i), Data: data, Store: true})
	}
	w := wheeltest.Spec{Name: s.Name, Version: s.Version, Files: files}
	if s.ConsoleScript {
		files = append(files, wheeltest.File{Name: root + "/cli.py", Data: []byte("def main():\n    print(" + fmt.Sprintf("%q", s.Name) + ")\n    return 0\n")})
		w.Files = files
		w.EntryPoints = fmt.Sprintf("[console_scripts]\n%s = %s.cli:main\n", s.Name, strings.ReplaceAll(root, "/", "."))
	}
	return w
}

// Members is how many files the wheel holds and how many bytes they add
// up to at least (the large members; small text is not counted), computed
// without generating anything.
func (s Spec) Members() (files int, bytes int64) {
	files = 1 + s.PyFiles + (s.PyFiles+49)/50 + s.DataFiles + s.Blobs + 3 // __init__, modules, subpackage inits, data, blobs, METADATA WHEEL RECORD
	if s.ConsoleScript {
		files += 2 // cli.py, entry_points.txt
	}
	return files, int64(s.DataFiles)*int64(s.DataSize) + int64(s.Blobs)*int64(s.BlobSize)
}

// Filename is the wheel's file name.
func (s Spec) Filename() string {
	return wheeltest.Spec{Name: s.Name, Version: s.Version}.Filename()
}

func nameSeed(name string) uint64 {
	h := sha256.Sum256([]byte(name))
	return binary.LittleEndian.Uint64(h[:8])
}

// fillText fills b with compressible text, as headers and stubs are.
func fillText(rng *rand.Rand, b []byte) {
	const words = "def class return import self tensor float int None from typing Optional List "
	for i := range b {
		if i%64 == 63 {
			b[i] = '\n'
			continue
		}
		b[i] = words[(i+rng.IntN(4))%len(words)]
	}
}

// fillRandom fills b with incompressible bytes.
func fillRandom(rng *rand.Rand, b []byte) {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], rng.Uint64())
	binary.LittleEndian.PutUint64(seed[8:], rng.Uint64())
	c := rand.NewChaCha8(seed)
	c.Read(b)
}

// Write writes the wheels of specs into dir, jobs at a time, and returns
// them in the order of specs. A wheel that already exists with the same
// name is rewritten (content is deterministic, so its bytes do not change).
func Write(dir string, specs []Spec, jobs int) ([]Wheel, error) {
	if jobs < 1 {
		jobs = 1
	}
	out := make([]Wheel, len(specs))
	errs := make([]error, len(specs))
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	for i := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = writeOne(dir, specs[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("synthetic wheel %s: %w", specs[i].Name, err)
		}
	}
	return out, nil
}

func writeOne(dir string, s Spec) (Wheel, error) {
	ws := s.wheelSpec()
	path := filepath.Join(dir, ws.Filename())
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return Wheel{}, err
	}
	h := sha256.New()
	cw := &countingWriter{}
	bw := bufio.NewWriterSize(io.MultiWriter(f, h, cw), 1<<20)
	err = wheeltest.WriteTo(bw, ws)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return Wheel{}, err
	}
	w := Wheel{Spec: s, Filename: ws.Filename(), Path: path, SHA256: hex.EncodeToString(h.Sum(nil)), Size: cw.n}
	w.Files = len(ws.Files) + 3 // METADATA, WHEEL, RECORD
	if ws.EntryPoints != "" {
		w.Files++
	}
	for _, f := range ws.Files {
		w.Unpacked += int64(len(f.Data))
	}
	return w, nil
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// Small is a stack of n wheels of about files members each (a third of
// them Python modules), a few kilobytes apiece: quick to sync, yet with
// enough files that unpacking and building take measurable time.
func Small(prefix string, n, files int) []Spec {
	specs := make([]Spec, n)
	for i := range specs {
		specs[i] = Spec{
			Name: fmt.Sprintf("%s-%02d", prefix, i), Version: "1.0." + fmt.Sprint(i%3),
			PyFiles: files / 3, DataFiles: files - files/3, DataSize: 512 + 64*(i%5),
			ConsoleScript: i%4 == 0, Seed: uint64(i),
		}
	}
	return specs
}

// F5Shaped is a stack shaped like the F5-TTS closure: a few torch-sized
// wheels with thousands of modules and hundreds of megabytes of shared
// libraries, a dozen nvidia-* wheels of big libraries in a shared
// namespace, and a long tail of small pure-Python packages. scale 1.0 is
// >= 150 wheels, >= 40k files, >= 2 GB unpacked; smaller scales shrink
// sizes and file counts (never below 150 wheels) to fit a time budget.
func F5Shaped(scale float64) []Spec {
	sc := func(n int) int { return max(1, int(float64(n)*scale)) }
	var specs []Spec
	for i, name := range []string{"torch", "torchaudio", "triton", "transformers"} {
		specs = append(specs, Spec{
			Name: "synth-" + name, Version: "2.8.0",
			PyFiles: sc(4500), DataFiles: sc(2500), DataSize: 1500,
			Blobs: 4, BlobSize: sc(80 << 20), ConsoleScript: i == 0, Seed: uint64(100 + i),
		})
	}
	for i, name := range []string{"cublas", "cudnn", "cufft", "curand", "cusolver", "cusparse", "nccl", "nvjitlink", "nvtx", "cuda-runtime", "cuda-nvrtc", "cusparselt"} {
		specs = append(specs, Spec{
			Name: "synth-nvidia-" + name, Version: "12.8.0", Namespace: "nvidia",
			DataFiles: 20, DataSize: 4096, Blobs: 1, BlobSize: sc(60 << 20), Seed: uint64(200 + i),
		})
	}
	for i := 0; len(specs) < 160; i++ {
		py := sc(40 + (i*37)%220)
		specs = append(specs, Spec{
			Name: fmt.Sprintf("synth-lib-%03d", i), Version: fmt.Sprintf("1.%d.0", i%7),
			PyFiles: py, DataFiles: py / 3, DataSize: 900,
			Blobs: i % 3 % 2, BlobSize: sc(900 << 10), ConsoleScript: i%9 == 0, Seed: uint64(300 + i),
		})
	}
	return specs
}

// Entry is one package of a lock.
type Entry struct {
	Name, Version, Filename string
	URL                     string // or Path, relative to the lock
	Path                    string
	SHA256                  string
	Size                    int64
	Group                   string
	// Sdist makes the file the package's sdist (Filename a .tar.gz or
	// .zip), which volboot builds, instead of a wheel.
	Sdist bool
}

// Entry is w's lock entry for group, served at url.
func (w Wheel) Entry(group, url string) Entry {
	return Entry{Name: w.Spec.Name, Version: w.Spec.Version, Filename: w.Filename, URL: url, SHA256: w.SHA256, Size: w.Size, Group: group}
}

// Lock renders a PEP 751 lock of entries; each package belongs to its
// entry's dependency group and is installed from its wheel, or built from
// its sdist.
func Lock(entries []Entry) []byte {
	groups := map[string]bool{}
	for _, e := range entries {
		groups[e.Group] = true
	}
	var names []string
	for g := range groups {
		names = append(names, fmt.Sprintf("%q", g))
	}
	sort.Strings(names)
	var b bytes.Buffer
	fmt.Fprintf(&b, "lock-version = \"1.0\"\nrequires-python = \">=3.9\"\ndependency-groups = [%s]\ncreated-by = \"synthstack\"\n", strings.Join(names, ", "))
	for _, e := range entries {
		table := "[[packages.wheels]]"
		if e.Sdist {
			table = "[packages.sdist]"
		}
		fmt.Fprintf(&b, "\n[[packages]]\nname = %q\nversion = %q\nmarker = \"'%s' in dependency_groups\"\n%s\nname = %q\n",
			e.Name, e.Version, e.Group, table, e.Filename)
		if e.URL != "" {
			fmt.Fprintf(&b, "url = %q\n", e.URL)
		} else {
			fmt.Fprintf(&b, "path = %q\n", e.Path)
		}
		if e.Size > 0 {
			fmt.Fprintf(&b, "size = %d\n", e.Size)
		}
		fmt.Fprintf(&b, "hashes = { sha256 = %q }\n", e.SHA256)
	}
	return b.Bytes()
}

// Group is one manifest group.
type Group struct {
	Name         string
	Required     bool
	Requirements []string
	When         map[string]string // e.g. {"compute-capability": ">=8.0"}
}

// Manifest renders a volboot manifest whose lock is lockPath (relative to
// the manifest).
func Manifest(name, lockPath string, groups []Group) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "name = %q\n[python]\nrequires = \">=3.9\"\n[lock]\npath = %q\n", name, lockPath)
	for _, g := range groups {
		reqs := make([]string, len(g.Requirements))
		for i, r := range g.Requirements {
			reqs[i] = fmt.Sprintf("%q", r)
		}
		fmt.Fprintf(&b, "\n[[group]]\nname = %q\nrequired = %t\nrequirements = [%s]\n", g.Name, g.Required, strings.Join(reqs, ", "))
		if len(g.When) > 0 {
			var kv []string
			for k, v := range g.When {
				kv = append(kv, fmt.Sprintf("%s = %q", k, v))
			}
			sort.Strings(kv)
			fmt.Fprintf(&b, "when = { %s }\n", strings.Join(kv, ", "))
		}
	}
	return b.Bytes()
}

// Stats sums a stack's size.
func Stats(ws []Wheel) (wheels, files int, size, unpacked int64) {
	for _, w := range ws {
		files += w.Files
		size += w.Size
		unpacked += w.Unpacked
	}
	return len(ws), files, size, unpacked
}
