package lockgen

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/volboot/volboot/bootstrap/redact"
)

// Fetcher opens a URL for reading: the sdists volboot inspects and the
// direct-URL files whose size uv does not write.
type Fetcher interface {
	Open(ctx context.Context, rawURL string) (io.ReadCloser, error)
}

// HTTPFetcher fetches with an http.Client.
type HTTPFetcher struct{ Client *http.Client }

// Open implements Fetcher.
func (f HTTPFetcher) Open(ctx context.Context, rawURL string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	client := f.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %s", redact.URL(rawURL), redactErr(err, rawURL))
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", redact.URL(rawURL), resp.Status)
	}
	return resp.Body, nil
}

func redactErr(err error, rawURL string) string {
	return strings.ReplaceAll(err.Error(), rawURL, redact.URL(rawURL))
}

// maxInspect bounds the sdists volboot reads to look for native code.
const maxInspect = 512 << 20

// measured is what reading a whole file told: its sha256 and size.
type measured struct {
	SHA256 string
	Size   int64
}

// measure reads a file and returns its sha256 and size.
func measure(ctx context.Context, f Fetcher, rawURL string) (measured, error) {
	rc, err := f.Open(ctx, rawURL)
	if err != nil {
		return measured{}, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return measured{}, fmt.Errorf("read %s: %w", redact.URL(rawURL), err)
	}
	return measured{SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

// SdistContent is what an sdist holds, as far as building it goes.
type SdistContent struct {
	Files  int
	Native []string // native sources and native build files, in archive order
}

// isNative reports whether a file of an sdist means a compiler: a source
// file one builds, or a build description that implies one.
func isNative(name string) bool {
	base := path.Base(name)
	switch base {
	case "CMakeLists.txt", "Cargo.toml", "meson.build":
		return true
	}
	switch strings.ToLower(path.Ext(base)) {
	case ".c", ".cc", ".cpp", ".cxx", ".c++", ".cu", ".pyx", ".f", ".f90", ".rs":
		return true
	}
	return false
}

// inspectSdist reads an sdist from f, checks it against the sha256 and
// size the lock gives, and lists its native files.
func inspectSdist(ctx context.Context, f Fetcher, a *Artifact) (SdistContent, error) {
	if a.Size > maxInspect {
		return SdistContent{}, fmt.Errorf("%d bytes: larger than volboot reads to look inside", a.Size)
	}
	rc, err := f.Open(ctx, a.URL)
	if err != nil {
		return SdistContent{}, err
	}
	defer rc.Close()
	h := sha256.New()
	data, err := io.ReadAll(io.TeeReader(io.LimitReader(rc, maxInspect+1), h))
	if err != nil {
		return SdistContent{}, fmt.Errorf("read %s: %w", redact.URL(a.URL), err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != a.SHA256 || (a.Size >= 0 && int64(len(data)) != a.Size) {
		return SdistContent{}, &MismatchError{URL: a.URL, WantSHA256: a.SHA256, WantSize: a.Size, GotSHA256: sum, GotSize: int64(len(data))}
	}
	return listSdist(sdistName(a), data)
}

// MismatchError is a file whose bytes are not what the lock says.
type MismatchError struct {
	URL                   string
	WantSHA256, GotSHA256 string
	WantSize, GotSize     int64
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%s is %d bytes with sha256 %s, but uv locked it as %d bytes with sha256 %s: the index serves other bytes than uv saw; run volboot lock again, and report it if it persists",
		redact.URL(e.URL), e.GotSize, e.GotSHA256, e.WantSize, e.WantSHA256)
}

func sdistName(a *Artifact) string {
	if a.Name != "" {
		return a.Name
	}
	if u, err := url.Parse(a.URL); err == nil {
		return path.Base(u.Path)
	}
	return a.URL
}

// listSdist lists a .tar.gz or .zip sdist's files.
func listSdist(name string, data []byte) (SdistContent, error) {
	var c SdistContent
	add := func(file string) {
		c.Files++
		if isNative(file) {
			// Without the sdist's top directory (name-version/).
			if _, rest, ok := strings.Cut(file, "/"); ok && rest != "" {
				file = rest
			}
			c.Native = append(c.Native, file)
		}
	}
	lower := strings.ToLower(name)
	switch {
	case strings.HasSuffix(lower, ".tar.gz") || strings.HasSuffix(lower, ".tgz"):
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return c, fmt.Errorf("%s: %w", name, err)
		}
		tr := tar.NewReader(zr)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return c, nil
			}
			if err != nil {
				return c, fmt.Errorf("%s: %w", name, err)
			}
			if hdr.Typeflag == tar.TypeReg {
				add(hdr.Name)
			}
		}
	case strings.HasSuffix(lower, ".zip"):
		zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return c, fmt.Errorf("%s: %w", name, err)
		}
		for _, f := range zr.File {
			if !f.FileInfo().IsDir() {
				add(f.Name)
			}
		}
		return c, nil
	default:
		return c, fmt.Errorf("%s: not a .tar.gz or .zip sdist", name)
	}
}
