package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/volboot/volboot/bootstrap/wheel/wheeltest"
)

// A synthetic stack shaped like the F5-TTS closure: one torch-like wheel
// (large shared objects, thousands of modules and headers), nvidia-like
// wheels sharing the nvidia/ namespace directory, medium wheels
// (transformers-, scipy-like) and a long tail of small pure-Python wheels.
// Content is generated from a fixed seed, so the wheels and their digests
// are the same on every run. Binary data compresses about 2-3x and Python
// sources about 4x, like real wheels.

type benchWheel struct {
	path, filename, sha string
	files               int
	bytes               int64
}

type stackShape struct {
	scale float64 // 1.0: >= 150 wheels, >= 40k files, >= 2 GB unpacked
}

func (s stackShape) n(x int) int {
	v := int(float64(x) * s.scale)
	return max(v, 1)
}

func (s stackShape) mb(x float64) int { return max(int(x*s.scale*(1<<20)), 4096) }

// specs returns the wheel specs, biggest first. Data is generated lazily by
// fill so that only a couple of wheels are in memory at once.
type lazySpec struct {
	spec wheeltest.Spec
	fill func(r *rand.Rand, s *wheeltest.Spec)
	seed uint64
}

func pySource(r *rand.Rand, size int) []byte {
	var b bytes.Buffer
	b.WriteString("\"\"\"Generated module.\"\"\"\nimport os\nimport sys\n\n")
	for i := 0; b.Len() < size; i++ {
		n := r.IntN(1000)
		fmt.Fprintf(&b, "def fn_%d_%d(value, scale=%d, *args, **kwargs):\n    \"\"\"Return a transformed value (%d).\"\"\"\n"+
			"    items = [value * k + %d for k in range(scale)]\n    if kwargs.get('flag_%d'):\n        return sum(items) / max(len(items), 1)\n"+
			"    return {'value': value, 'items': items, 'id': %d}\n\n", i, n, r.IntN(50), n, r.IntN(97), n, r.IntN(1<<20))
		if i%5 == 4 {
			fmt.Fprintf(&b, "class Thing%d:\n    def __init__(self, a=%d):\n        self.a = a\n    def run(self):\n        return fn_%d_%d(self.a)\n\n", i, n, i, n)
		}
	}
	return b.Bytes()
}

func header(r *rand.Rand, size int) []byte {
	var b bytes.Buffer
	b.WriteString("#pragma once\n#include <cstdint>\n\nnamespace gen {\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "inline int64_t op_%d_%d(int64_t a, int64_t b) { return a * %d + b - %d; }\n", i, r.IntN(1000), r.IntN(97), r.IntN(1<<16))
	}
	b.WriteString("}  // namespace gen\n")
	return b.Bytes()
}

// binary returns bytes that deflate about 2.5x: random runs between
// repetitive structure, like code and tables in a shared object.
func binary(r *rand.Rand, size int) []byte {
	out := make([]byte, size)
	var pat [64]byte
	for i := range pat {
		pat[i] = byte(r.Uint32())
	}
	for off := 0; off < size; off += 1024 {
		end := min(off+1024, size)
		chunk := out[off:end]
		k := min(len(chunk), 300)
		for i := 0; i < k; i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < k; j++ {
				chunk[i+j] = byte(v >> (8 * j))
			}
		}
		for i := k; i < len(chunk); i++ {
			chunk[i] = pat[i%64]
		}
		if r.IntN(16) == 0 {
			pat[r.IntN(64)] = byte(r.Uint32())
		}
	}
	return out
}

func (s stackShape) specs() []lazySpec {
	var out []lazySpec
	seed := uint64(1)
	add := func(name, version string, platlib bool, fill func(r *rand.Rand, sp *wheeltest.Spec)) {
		seed++
		tag := "py3-none-any"
		if platlib {
			tag = "cp311-cp311-manylinux_2_17_x86_64"
		}
		out = append(out, lazySpec{spec: wheeltest.Spec{Name: name, Version: version, Tag: tag, Platlib: platlib}, fill: fill, seed: seed})
	}
	// torch-like.
	add("faketorch", "2.8.0", true, func(r *rand.Rand, sp *wheeltest.Spec) {
		for i, mb := range []float64{330, 170, 100, 60, 40, 25, 12, 8, 5} {
			sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("faketorch/lib/libtorch_part%d.so", i), Data: binary(r, s.mb(mb)), Mode: 0o755})
		}
		for i := 0; i < s.n(3000); i++ {
			sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("faketorch/sub%02d/mod%04d.py", i%40, i), Data: pySource(r, 1500+r.IntN(7000))})
		}
		for i := 0; i < 40; i++ {
			sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("faketorch/sub%02d/__init__.py", i)})
		}
		sp.Files = append(sp.Files, wheeltest.File{Name: "faketorch/__init__.py", Data: []byte("from faketorch.sub00 import *\n")})
		for i := 0; i < s.n(7000); i++ {
			sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("faketorch/include/aten/ops%02d/op%04d.h", i%60, i), Data: header(r, 1000+r.IntN(4000))})
		}
		for i := 0; i < s.n(500); i++ {
			sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("faketorch/stubs/s%03d.pyi", i), Data: header(r, 500+r.IntN(3000))})
		}
		sp.EntryPoints = "[console_scripts]\ntorchrun = faketorch.sub00:main\n"
	})
	// nvidia-like: shared nvidia/ namespace, big libraries, headers.
	for _, nv := range []struct {
		name string
		mb   []float64
		hdrs int
	}{
		{"cublas", []float64{180, 60, 5}, 30}, {"cudnn", []float64{150, 90, 40, 20}, 60}, {"nccl", []float64{110}, 10},
		{"cusparse", []float64{80}, 10}, {"cufft", []float64{70, 5}, 20}, {"curand", []float64{30}, 15},
		{"cusolver", []float64{60, 10}, 20}, {"nvjitlink", []float64{25}, 5}, {"cuda_runtime", []float64{3}, 80},
		{"cuda_cupti", []float64{8, 3}, 300}, {"cuda_nvrtc", []float64{30, 2}, 10}, {"cusparselt", []float64{70}, 5},
	} {
		add("fake-nvidia-"+nv.name+"-cu12", "12.8.1", true, func(r *rand.Rand, sp *wheeltest.Spec) {
			sp.Files = append(sp.Files,
				wheeltest.File{Name: "nvidia/__init__.py"},
				wheeltest.File{Name: "nvidia/" + nv.name + "/__init__.py"},
				wheeltest.File{Name: "nvidia/" + nv.name + "/lib/__init__.py"},
				wheeltest.File{Name: "nvidia/" + nv.name + "/include/__init__.py"})
			for i, mb := range nv.mb {
				sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("nvidia/%s/lib/lib%s.so.%d", nv.name, nv.name, 12+i), Data: binary(r, s.mb(mb)), Mode: 0o755})
			}
			for i := 0; i < s.n(nv.hdrs); i++ {
				sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("nvidia/%s/include/%s_%03d.h", nv.name, nv.name, i), Data: header(r, 2000+r.IntN(20000))})
			}
		})
	}
	// Medium wheels.
	for w := 0; w < 20; w++ {
		name := fmt.Sprintf("fakemedium%02d", w)
		add(name, "4.57.1", w%2 == 0, func(r *rand.Rand, sp *wheeltest.Spec) {
			pkg := name
			for i := 0; i < s.n(650+r.IntN(100)); i++ {
				sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("%s/m%02d/mod%04d.py", pkg, i%25, i), Data: pySource(r, 800+r.IntN(2500))})
			}
			for i := 0; i < 25; i++ {
				sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("%s/m%02d/__init__.py", pkg, i)})
			}
			sp.Files = append(sp.Files, wheeltest.File{Name: pkg + "/__init__.py", Data: []byte("VERSION = '4.57.1'\n")})
			for i := 0; i < s.n(500+r.IntN(100)); i++ {
				sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("%s/data/d%02d/f%04d.json", pkg, i%10, i), Data: header(r, 500+r.IntN(3000))})
			}
			if w%2 == 0 {
				for i := 0; i < 1+r.IntN(3); i++ {
					sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("%s/_ext%d.cpython-311-x86_64-linux-gnu.so", pkg, i), Data: binary(r, s.mb(float64(3+r.IntN(25)))), Mode: 0o755})
				}
			}
			sp.EntryPoints = fmt.Sprintf("[console_scripts]\n%s-cli = %s:main\n", name, pkg)
		})
	}
	// The long tail.
	for w := 0; w < 130; w++ {
		name := fmt.Sprintf("faketail%03d", w)
		add(name, fmt.Sprintf("1.%d.0", w%7), false, func(r *rand.Rand, sp *wheeltest.Spec) {
			n := s.n(20 + r.IntN(100))
			for i := 0; i < n; i++ {
				sp.Files = append(sp.Files, wheeltest.File{Name: fmt.Sprintf("%s/mod%03d.py", name, i), Data: pySource(r, 500+r.IntN(3000))})
			}
			sp.Files = append(sp.Files, wheeltest.File{Name: name + "/__init__.py"})
		})
	}
	return out
}

// writeStack generates the stack's wheels into dir with two writers.
func writeStack(dir string, shape stackShape) ([]benchWheel, error) {
	specs := shape.specs()
	out := make([]benchWheel, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i, ls := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := rand.New(rand.NewPCG(ls.seed, 0x5eed))
			sp := ls.spec
			ls.fill(r, &sp)
			var buf bytes.Buffer
			if err := wheeltest.WriteTo(&buf, sp); err != nil {
				errs[i] = err
				return
			}
			p := filepath.Join(dir, sp.Filename())
			if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
				errs[i] = err
				return
			}
			sum := sha256.Sum256(buf.Bytes())
			bw := benchWheel{path: p, filename: sp.Filename(), sha: hex.EncodeToString(sum[:]), files: len(sp.Files) + 3}
			for _, f := range sp.Files {
				bw.bytes += int64(len(f.Data))
			}
			out[i] = bw
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b benchWheel) int { return int(b.bytes - a.bytes) })
	return out, nil
}
