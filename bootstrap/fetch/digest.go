package fetch

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// DigestKind names how a file's expected digest is computed.
type DigestKind int

const (
	// SizeOnly verifies nothing but the size (Item.Size must be known).
	SizeOnly DigestKind = iota
	// SHA256 is the plain sha256 of the content (wheels, LFS files).
	SHA256
	// GitBlobSHA1 is git's blob id: sha1("blob <size>\x00" + content), what
	// the Hugging Face hub reports as the ETag of a non-LFS file. It needs
	// Item.Size.
	GitBlobSHA1
)

func (k DigestKind) String() string {
	switch k {
	case SizeOnly:
		return "size-only"
	case SHA256:
		return "sha256"
	case GitBlobSHA1:
		return "git-blob-sha1"
	}
	return "DigestKind(" + strconv.Itoa(int(k)) + ")"
}

// Digest is an expected content digest: a kind and lowercase hex.
type Digest struct {
	Kind DigestKind
	Hex  string
}

func (d Digest) String() string {
	if d.Kind == SizeOnly {
		return "size-only"
	}
	return d.Kind.String() + ":" + d.Hex
}

// validate checks the hex length for the kind.
func (d Digest) validate() error {
	want := 0
	switch d.Kind {
	case SizeOnly:
		return nil
	case SHA256:
		want = 64
	case GitBlobSHA1:
		want = 40
	default:
		return fmt.Errorf("unknown digest kind %d", d.Kind)
	}
	if len(d.Hex) != want || strings.Trim(strings.ToLower(d.Hex), "0123456789abcdef") != "" {
		return fmt.Errorf("%s digest %q is not %d hex digits", d.Kind, d.Hex, want)
	}
	return nil
}

// newHasher returns a hash primed for content of the given size (git blob
// ids hash a header first), or nil for SizeOnly.
func (d Digest) newHasher(size int64) hash.Hash {
	switch d.Kind {
	case SHA256:
		return sha256.New()
	case GitBlobSHA1:
		h := sha1.New()
		fmt.Fprintf(h, "blob %d\x00", size)
		return h
	}
	return nil
}

func sumHex(h hash.Hash) string {
	if h == nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}
