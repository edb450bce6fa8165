package locallayout

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/volboot/volboot/bootstrap/fileops"
	"github.com/volboot/volboot/bootstrap/pack"
)

// BenchmarkMaterialize lays out a pack of 20,000 files of 2 KiB in 400
// directories: the local layout's extra boot is creating files.
func BenchmarkMaterialize(b *testing.B) {
	vol := b.TempDir()
	var buf bytes.Buffer
	w, err := pack.NewWriter(&buf)
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("x = 1\n"), 340)
	for d := range 400 {
		for f := range 50 {
			if err := w.File(fmt.Sprintf("lib/site-packages/p%03d/m%03d.py", d, f), false, 1_700_000_000e9, data); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	p := filepath.Join(vol, "g.pack")
	os.WriteFile(p, buf.Bytes(), 0o644)
	o := Options{Volume: vol, Generation: "g", PackPath: p, BootID: "b",
		Pack: PackRecord{SHA256: hex.EncodeToString(sum[:])}}
	for _, jobs := range []int{4, 8} {
		b.Run(fmt.Sprintf("jobs=%d", jobs), func(b *testing.B) {
			o.Ops = fileops.New(jobs, 1)
			for i := 0; i < b.N; i++ {
				o.LocalDir = filepath.Join(b.TempDir(), "local")
				res, err := Materialize(context.Background(), o)
				if err != nil {
					b.Fatal(err)
				}
				res.Lease.Close()
			}
		})
	}
}
