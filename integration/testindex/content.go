package testindex

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
)

// Content is what the server serves for one file: a size and random access
// to its bytes. Implementations must be safe for concurrent ReadAt calls.
type Content interface {
	io.ReaderAt
	Size() int64
}

// Bytes is in-memory content.
type Bytes []byte

// Size returns len(b).
func (b Bytes) Size() int64 { return int64(len(b)) }

// ReadAt implements io.ReaderAt.
func (b Bytes) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// diskFile serves a file from disk; the descriptor stays open for the
// server's lifetime (Server.Close closes it).
type diskFile struct {
	f    *os.File
	size int64
}

func (d *diskFile) Size() int64                             { return d.size }
func (d *diskFile) ReadAt(p []byte, off int64) (int, error) { return d.f.ReadAt(p, off) }

// genBlock is the period of Generated content's base pattern.
const genBlock = 1 << 20

// Generated is deterministic pseudo-random content of any size that needs no
// memory or disk proportional to its size: a 1 MiB random block whose first
// 8 bytes are replaced, in every 1 MiB block, by the block's index, so no two
// blocks are equal and a misplaced range changes the digest.
type Generated struct {
	size int64
	base []byte
}

// NewGenerated returns size bytes of content derived from seed.
func NewGenerated(size int64, seed uint64) *Generated {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	base := make([]byte, genBlock)
	for i := 0; i < genBlock; i += 8 {
		binary.LittleEndian.PutUint64(base[i:], r.Uint64())
	}
	return &Generated{size: size, base: base}
}

// Size returns the content's length.
func (g *Generated) Size() int64 { return g.size }

// ReadAt implements io.ReaderAt.
func (g *Generated) ReadAt(p []byte, off int64) (int, error) {
	if off >= g.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := g.size - off; int64(want) > rem {
		want = int(rem)
	}
	n := 0
	for n < want {
		pos := off + int64(n)
		blk, in := pos/genBlock, int(pos%genBlock)
		var hdr [8]byte
		binary.LittleEndian.PutUint64(hdr[:], uint64(blk))
		c := 0
		if in < 8 {
			c = copy(p[n:want], hdr[in:])
		}
		c += copy(p[n+c:want], g.base[in+c:])
		n += c
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// SHA256 hashes content by reading it sequentially (for generated content
// this costs about a second per GiB).
func SHA256(c Content) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(c, 0, c.Size())); err != nil {
		return "", fmt.Errorf("hash content: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
