// Package wheeltest writes wheel files for tests and benchmarks: correct
// ones (RECORD computed from the contents) and, through the Spec's
// override fields, deliberately broken ones.
package wheeltest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zip"
)

// File is one member of a wheel.
type File struct {
	Name string // path in the zip, relative to the wheel root
	Data []byte
	Mode fs.FileMode // 0 means 0644; a symlink mode writes a link entry
	// Store writes the member uncompressed (for incompressible data).
	Store bool
}

// Spec describes a wheel. Name and Version are used as written for the
// filename, the dist-info directory and METADATA unless overridden.
type Spec struct {
	Name, Version string
	Tag           string // default py3-none-any
	Files         []File
	EntryPoints   string // entry_points.txt content, if any
	Platlib       bool   // Root-Is-Purelib: false

	// Overrides for broken wheels.
	DistInfoName string // dist-info directory name (without .dist-info)
	MetadataName string
	MetadataVer  string
	WheelText    string            // whole WHEEL file
	OmitRecord   map[string]bool   // members left out of RECORD
	RecordHash   map[string]string // replace a member's RECORD hash
	RecordSize   map[string]int    // replace a member's RECORD size
	Raw          []File            // extra members added after RECORD, not listed
	Level        int               // deflate level; 0 means flate.BestSpeed
}

// Filename is the wheel's filename.
func (s Spec) Filename() string {
	tag := s.Tag
	if tag == "" {
		tag = "py3-none-any"
	}
	return fmt.Sprintf("%s-%s-%s.whl", escape(s.Name), s.Version, tag)
}

func escape(name string) string {
	return strings.NewReplacer("-", "_", ".", "_").Replace(name)
}

// Digest returns RECORD's encoding of data's sha256.
func Digest(data []byte) string {
	s := sha256.Sum256(data)
	return "sha256=" + base64.RawURLEncoding.EncodeToString(s[:])
}

// Write writes the wheel into dir and returns its path and sha256 hex.
func Write(dir string, s Spec) (path, sha string, err error) {
	var buf bytes.Buffer
	if err := WriteTo(&buf, s); err != nil {
		return "", "", err
	}
	path = filepath.Join(dir, s.Filename())
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	return path, hex.EncodeToString(sum[:]), nil
}

// WriteTo writes the wheel's bytes to w.
func WriteTo(w io.Writer, s Spec) error {
	di := s.DistInfoName
	if di == "" {
		di = escape(s.Name) + "-" + s.Version
	}
	di += ".dist-info"
	mname, mver := s.MetadataName, s.MetadataVer
	if mname == "" {
		mname = s.Name
	}
	if mver == "" {
		mver = s.Version
	}
	wheelText := s.WheelText
	if wheelText == "" {
		tag := s.Tag
		if tag == "" {
			tag = "py3-none-any"
		}
		wheelText = fmt.Sprintf("Wheel-Version: 1.0\nGenerator: wheeltest\nRoot-Is-Purelib: %v\nTag: %s\n", !s.Platlib, tag)
	}
	files := append([]File(nil), s.Files...)
	files = append(files,
		File{Name: di + "/METADATA", Data: []byte(fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: test wheel\n\n", mname, mver))},
		File{Name: di + "/WHEEL", Data: []byte(wheelText)},
	)
	if s.EntryPoints != "" {
		files = append(files, File{Name: di + "/entry_points.txt", Data: []byte(s.EntryPoints)})
	}
	var rec strings.Builder
	for _, f := range files {
		if s.OmitRecord[f.Name] {
			continue
		}
		h := Digest(f.Data)
		if r, ok := s.RecordHash[f.Name]; ok {
			h = r
		}
		size := len(f.Data)
		if n, ok := s.RecordSize[f.Name]; ok {
			size = n
		}
		fmt.Fprintf(&rec, "%s,%s,%d\n", csvQuote(f.Name), h, size)
	}
	fmt.Fprintf(&rec, "%s/RECORD,,\n", di)
	files = append(files, File{Name: di + "/RECORD", Data: []byte(rec.String())})
	files = append(files, s.Raw...)

	zw := zip.NewWriter(w)
	level := s.Level
	if level == 0 {
		level = flate.BestSpeed
	}
	zw.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(out, level)
	})
	for _, f := range files {
		h := &zip.FileHeader{Name: f.Name, Method: zip.Deflate}
		if f.Store {
			h.Method = zip.Store
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		h.SetMode(mode)
		fw, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		if _, err := fw.Write(f.Data); err != nil {
			return err
		}
	}
	return zw.Close()
}

func csvQuote(s string) string {
	if strings.ContainsAny(s, ",\"\n") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}
