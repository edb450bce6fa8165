// Package pack reads and writes a generation's pack: the small files of a
// generation in one zstd-compressed stream, so that a container can lay
// them out on its own disk with one sequential read of the volume instead
// of a network round trip per file (DESIGN.md §5.8).
//
// A pack is the 8 bytes "VBPACK01" and then one stream of records,
// compressed as one or more zstd frames (concatenated frames are one zstd
// stream to a decoder), in strictly increasing byte order of their paths:
//
//	'F' path mtime size bytes   a regular file (0644)
//	'X' path mtime size bytes   an executable file (0755)
//	'S' path target         a symbolic link, target as given (the skeleton's
//	                        bin/python to the base interpreter, python3 ->
//	                        python, lib64 -> lib)
//	'V' path target size    a file left on the volume: target is its path
//	                        relative to the volume's root, size its size
//	'D' path                a directory (0755; needed only for empty ones:
//	                        a reader makes the parents of every record)
//	'E' count               the end: count is the number of records before it
//
// Strings and numbers are uvarint-prefixed bytes and uvarints; mtime is in
// nanoseconds since 1970. A file keeps its mtime because Python's
// timestamp-checked bytecode records its source's: a source unpacked with
// a new mtime would make every .pyc stale, and each import compile again. Nothing
// may follow the end record inside the stream. Paths are relative,
// '/'-separated and clean; no record may sit below a path that is not a
// directory (a file or a link), so a reader that makes the records in order
// never writes through a link it made.
//
// A writer may end a frame after any record (Writer.EndFrame), and a
// frame's bytes depend on its records alone, so a pack may be written by
// several writers in turn, each going on at the frame where the last
// stopped (Continue): a builder killed halfway keeps the frames it ended.
//
// Who writes a pack names it by the sha256 of its bytes (the reconciler
// records it with the generation), and a reader given that digest checks
// the bytes against it as they stream: Next returns io.EOF only once the
// end record is read and the digest matched. Every other defect is an
// error naming the record and what is wrong; the caller then discards what
// it made from the pack.
package pack

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Magic opens every pack; the digits are the format version.
const Magic = "VBPACK01"

// Kind is what a record makes.
type Kind byte

const (
	File       Kind = 'F' // a regular file, 0644
	Exec       Kind = 'X' // an executable file, 0755
	Symlink    Kind = 'S' // a symbolic link to Target, as given
	VolumeLink Kind = 'V' // a file left on the volume at Target (relative to its root)
	Dir        Kind = 'D' // a directory
	end        Kind = 'E'
)

// Limits a reader enforces; a pack beyond them is refused as damaged.
const (
	MaxPath     = 4096    // bytes of a path or link target
	MaxFileSize = 1 << 30 // bytes of one file inside the pack
	MaxRecords  = 4 << 20 // records in one pack
	// maxWindow bounds the decoder's memory; the writer uses a smaller
	// window.
	maxWindow = 64 << 20
)

// Entry is one record.
type Entry struct {
	Kind   Kind
	Path   string // relative, '/'-separated, clean
	Target string // Symlink, VolumeLink
	Size   int64  // File, Exec: bytes in the pack; VolumeLink: the target's size
	MTime  int64  // File, Exec: modification time, nanoseconds since 1970
}

// CheckPath reports what is wrong with p as a path inside a pack (or as a
// VolumeLink's target): it must be relative, clean, without empty, "." or
// ".." elements, NUL or control characters, and at most MaxPath bytes.
func CheckPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case len(p) > MaxPath:
		return fmt.Errorf("path of %d bytes (at most %d)", len(p), MaxPath)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("absolute path %q", p)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("path %q has a control character", p)
		}
	}
	for _, el := range strings.Split(p, "/") {
		switch el {
		case "", ".", "..":
			return fmt.Errorf("path %q has an empty, . or .. element", p)
		}
		if len(el) > 255 {
			return fmt.Errorf("path %q has an element of more than 255 bytes", p)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("path %q is not clean", p)
	}
	return nil
}

// Writer writes a pack. Records must come in strictly increasing path
// order. Not safe for concurrent use.
type Writer struct {
	out   *bufio.Writer
	zw    *zstd.Encoder
	last  string
	count int
	// leaves are the paths of files and links so far: nothing may go
	// below them.
	leaves map[string]bool
	buf    []byte
	// framed: records went into the current frame since it began.
	framed bool
	err    error
}

// NewWriter starts a pack on w. Close must be called to finish it; w is
// not closed.
func NewWriter(w io.Writer) (*Writer, error) {
	pw, err := newWriter(w)
	if err != nil {
		return nil, err
	}
	if _, err := pw.out.WriteString(Magic); err != nil {
		return nil, err
	}
	return pw, nil
}

// Continue starts a Writer that goes on with a pack whose first frames
// another Writer wrote and ended (EndFrame): done are the records in
// those frames, in order (Kind and Path are used). It checks and counts
// them as if it had written them, and writes nothing for them, not even
// Magic: who assembles the pack puts those frames' bytes first on w. The
// pack is then the same bytes one Writer would have written, ending its
// frames at the same records.
func Continue(w io.Writer, done []Entry) (*Writer, error) {
	pw, err := newWriter(w)
	if err != nil {
		return nil, err
	}
	for _, e := range done {
		if e.Kind == end {
			return nil, errors.New("pack: Continue after the end record")
		}
		if err := pw.begin(e.Kind, e.Path); err != nil {
			return nil, err
		}
	}
	return pw, nil
}

func newWriter(w io.Writer) (*Writer, error) {
	out := bufio.NewWriterSize(w, 1<<20)
	// One encoder goroutine: a pack is written while the sync does other
	// work on a 2-core machine, and the volume, not the CPU, is the limit.
	// Its output depends on the bytes it is given alone, which frames
	// written by different Writers rely on.
	zw, err := zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(8<<20))
	if err != nil {
		return nil, err
	}
	return &Writer{out: out, zw: zw, leaves: map[string]bool{}}, nil
}

// EndFrame ends the current zstd frame after the last record and flushes
// it (with Magic, for the first frame) to w; the next record begins a new
// frame. Without records since the last frame it does nothing. What w has
// received is then a prefix of the pack that Continue can go on from.
func (w *Writer) EndFrame() error {
	if w.err != nil || !w.framed {
		return w.err
	}
	if err := w.zw.Close(); err != nil {
		w.err = err
		return err
	}
	if err := w.out.Flush(); err != nil {
		w.err = err
		return err
	}
	w.zw.Reset(w.out)
	w.framed = false
	return nil
}

func (w *Writer) begin(k Kind, p string) error {
	if w.err != nil {
		return w.err
	}
	if err := CheckPath(p); err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	if w.count > 0 && p <= w.last {
		return fmt.Errorf("pack: %s after %s: records must come in increasing path order", p, w.last)
	}
	if q := leafAbove(p, w.leaves); q != "" {
		return fmt.Errorf("pack: %s is below %s, which is not a directory", p, q)
	}
	if w.count >= MaxRecords {
		return fmt.Errorf("pack: more than %d records", MaxRecords)
	}
	w.last = p
	w.count++
	if k != Dir {
		w.leaves[p] = true
	}
	w.buf = append(w.buf[:0], byte(k))
	w.buf = appendString(w.buf, p)
	return nil
}

func (w *Writer) flush() error {
	w.framed = true
	if _, err := w.zw.Write(w.buf); err != nil {
		w.err = err
	}
	return w.err
}

// File adds a regular file (exec: mode 0755) with data, modified at mtime
// (nanoseconds since 1970).
func (w *Writer) File(p string, exec bool, mtime int64, data []byte) error {
	k := File
	if exec {
		k = Exec
	}
	if len(data) > MaxFileSize {
		return fmt.Errorf("pack: %s: %d bytes (at most %d in a pack)", p, len(data), MaxFileSize)
	}
	if mtime < 0 {
		return fmt.Errorf("pack: %s: mtime before 1970", p)
	}
	if err := w.begin(k, p); err != nil {
		return err
	}
	w.buf = binary.AppendUvarint(w.buf, uint64(mtime))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(data)))
	if err := w.flush(); err != nil {
		return err
	}
	if _, err := w.zw.Write(data); err != nil {
		w.err = err
	}
	return w.err
}

// Symlink adds a symbolic link to target.
func (w *Writer) Symlink(p, target string) error {
	if target == "" || len(target) > MaxPath || strings.ContainsRune(target, 0) {
		return fmt.Errorf("pack: %s: bad link target %q", p, target)
	}
	if err := w.begin(Symlink, p); err != nil {
		return err
	}
	w.buf = appendString(w.buf, target)
	return w.flush()
}

// VolumeLink adds a file that stays on the volume at target (relative to
// the volume's root), of size bytes.
func (w *Writer) VolumeLink(p, target string, size int64) error {
	if err := CheckPath(target); err != nil {
		return fmt.Errorf("pack: %s: target: %w", p, err)
	}
	if size < 0 {
		return fmt.Errorf("pack: %s: negative size", p)
	}
	if err := w.begin(VolumeLink, p); err != nil {
		return err
	}
	w.buf = appendString(w.buf, target)
	w.buf = binary.AppendUvarint(w.buf, uint64(size))
	return w.flush()
}

// Dir adds a directory.
func (w *Writer) Dir(p string) error {
	if err := w.begin(Dir, p); err != nil {
		return err
	}
	return w.flush()
}

// Close writes the end record and finishes the stream.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	w.buf = append(w.buf[:0], byte(end))
	w.buf = binary.AppendUvarint(w.buf, uint64(w.count))
	if err := w.flush(); err != nil {
		return err
	}
	if err := w.zw.Close(); err != nil {
		return err
	}
	w.err = errors.New("pack: closed")
	return w.out.Flush()
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// leafAbove returns the nearest parent of p among leaves, or "".
func leafAbove(p string, leaves map[string]bool) string {
	for i := strings.LastIndexByte(p, '/'); i > 0; i = strings.LastIndexByte(p[:i], '/') {
		if leaves[p[:i]] {
			return p[:i]
		}
	}
	return ""
}

// Reader reads a pack. Not safe for concurrent use.
type Reader struct {
	name   string // for errors
	src    *bufio.Reader
	hash   hash.Hash
	want   string
	zr     *zstd.Decoder
	rd     *bufio.Reader // over zr
	cur    *Entry
	left   int64 // unread bytes of cur
	count  int
	last   string
	leaves map[string]bool
	done   bool
	err    error
}

// NewReader starts reading the pack r; name is used in errors (its
// path). want, when not "", is the sha256 (hex) the pack's bytes must
// have: Next reports a mismatch instead of io.EOF. Close releases the
// decoder.
func NewReader(r io.Reader, name, want string) (*Reader, error) {
	h := sha256.New()
	src := bufio.NewReaderSize(io.TeeReader(r, h), 1<<20)
	magic := make([]byte, len(Magic))
	if _, err := io.ReadFull(src, magic); err != nil {
		return nil, fmt.Errorf("pack %s: reading its header: %w (cut short? build it again: volboot repair)", name, err)
	}
	if string(magic) != Magic {
		if strings.HasPrefix(string(magic), "VBPACK") {
			return nil, fmt.Errorf("pack %s: format %q, this volboot reads %q: upgrade volboot", name, magic, Magic)
		}
		return nil, fmt.Errorf("pack %s: not a volboot pack (header %q)", name, magic)
	}
	zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindow),
		zstd.WithDecoderMaxMemory(maxWindow*2), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", name, err)
	}
	return &Reader{name: name, src: src, hash: h, want: want, zr: zr, rd: bufio.NewReaderSize(zr, 256<<10), leaves: map[string]bool{}}, nil
}

// Close releases the decoder. It does not close the underlying reader.
func (r *Reader) Close() { r.zr.Close() }

func (r *Reader) fail(format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if r.cur != nil {
		what = fmt.Sprintf("record %d (%s): %s", r.count, r.cur.Path, what)
	} else {
		what = fmt.Sprintf("record %d: %s", r.count+1, what)
	}
	r.err = fmt.Errorf("pack %s is damaged: %s; build it again (volboot repair)", r.name, what)
	return r.err
}

func (r *Reader) uvarint(field string) (uint64, error) {
	v, err := binary.ReadUvarint(r.rd)
	if err != nil {
		return 0, r.fail("%s: %v", field, unexpected(err))
	}
	return v, nil
}

func (r *Reader) str(field string, max int) (string, error) {
	n, err := r.uvarint(field + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(max) {
		return "", r.fail("%s of %d bytes (at most %d)", field, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.rd, b); err != nil {
		return "", r.fail("%s: %v", field, unexpected(err))
	}
	return string(b), nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Next returns the next record. For File and Exec records the content
// follows through Read; bytes not read are skipped. After the end record
// it checks the digest and returns io.EOF; any other error is final.
func (r *Reader) Next() (*Entry, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.done {
		return nil, io.EOF
	}
	if r.left > 0 {
		if _, err := io.CopyN(io.Discard, r.rd, r.left); err != nil {
			return nil, r.fail("content: %v", unexpected(err))
		}
		r.left = 0
	}
	r.cur = nil
	k, err := r.rd.ReadByte()
	if err != nil {
		return nil, r.fail("no end record: %v", unexpected(err))
	}
	if Kind(k) == end {
		return nil, r.finish()
	}
	if r.count >= MaxRecords {
		return nil, r.fail("more than %d records", MaxRecords)
	}
	p, err := r.str("path", MaxPath)
	if err != nil {
		return nil, err
	}
	e := &Entry{Kind: Kind(k), Path: p}
	if err := CheckPath(p); err != nil {
		return nil, r.fail("%v", err)
	}
	if r.count > 0 && p <= r.last {
		return nil, r.fail("path %q does not come after %q", p, r.last)
	}
	if q := leafAbove(p, r.leaves); q != "" {
		return nil, r.fail("path %q is below %q, which is not a directory", p, q)
	}
	switch e.Kind {
	case File, Exec:
		t, err := r.uvarint("mtime")
		if err != nil {
			return nil, err
		}
		if t > 1<<62 {
			return nil, r.fail("mtime %d", t)
		}
		e.MTime = int64(t)
		n, err := r.uvarint("size")
		if err != nil {
			return nil, err
		}
		if n > MaxFileSize {
			return nil, r.fail("file of %d bytes (at most %d)", n, MaxFileSize)
		}
		e.Size = int64(n)
		r.left = e.Size
	case Symlink:
		if e.Target, err = r.str("link target", MaxPath); err != nil {
			return nil, err
		}
		if e.Target == "" || strings.ContainsRune(e.Target, 0) {
			return nil, r.fail("bad link target %q", e.Target)
		}
	case VolumeLink:
		if e.Target, err = r.str("volume target", MaxPath); err != nil {
			return nil, err
		}
		if err := CheckPath(e.Target); err != nil {
			return nil, r.fail("volume target: %v", err)
		}
		n, err := r.uvarint("size")
		if err != nil {
			return nil, err
		}
		if n > 1<<50 {
			return nil, r.fail("volume file of %d bytes", n)
		}
		e.Size = int64(n)
	case Dir:
	default:
		return nil, r.fail("unknown record kind %q", k)
	}
	r.count++
	r.last = p
	if e.Kind != Dir {
		r.leaves[p] = true
	}
	r.cur = e
	return e, nil
}

// Read reads the content of the current File or Exec record.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rd.Read(p)
	r.left -= int64(n)
	if err != nil && r.left > 0 {
		return n, r.fail("content: %v", unexpected(err))
	}
	return n, nil
}

// finish reads the end record's count, checks that the stream ends
// there, and checks the digest of the whole file.
func (r *Reader) finish() error {
	n, err := r.uvarint("end count")
	if err != nil {
		return err
	}
	if n != uint64(r.count) {
		return r.fail("the end record counts %d records, the pack has %d", n, r.count)
	}
	if _, err := r.rd.ReadByte(); err != io.EOF {
		if err == nil {
			return r.fail("bytes after the end record")
		}
		return r.fail("after the end record: %v", err)
	}
	// The digest covers every byte of the file, including any after the
	// compressed stream.
	if _, err := io.Copy(io.Discard, r.src); err != nil {
		return r.fail("reading to its end: %v", err)
	}
	if r.want != "" {
		if got := hex.EncodeToString(r.hash.Sum(nil)); got != r.want {
			r.cur = nil
			return r.fail("its sha256 is %s, the generation's record says %s", got, r.want)
		}
	}
	r.done = true
	return io.EOF
}

// Count is the number of records read so far.
func (r *Reader) Count() int { return r.count }

// CountingWriter passes writes to W and counts the bytes written: a pack's
// size, known as it is written (its writers hash it on the way too).
type CountingWriter struct {
	W io.Writer
	N int64
}

func (c *CountingWriter) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}
