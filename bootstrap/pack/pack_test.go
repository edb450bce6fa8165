package pack

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

type rec struct {
	kind   Kind
	path   string
	target string
	data   string
	size   int64
	mtime  int64
}

func write(t testing.TB, recs []rec) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := add(w, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// add writes one record.
func add(w *Writer, r rec) error {
	switch r.kind {
	case File, Exec:
		return w.File(r.path, r.kind == Exec, r.mtime, []byte(r.data))
	case Symlink:
		return w.Symlink(r.path, r.target)
	case VolumeLink:
		return w.VolumeLink(r.path, r.target, r.size)
	case Dir:
		return w.Dir(r.path)
	}
	return fmt.Errorf("kind %q", r.kind)
}

// writeFramed writes recs from record from on (with Continue when from >
// 0), ending a frame before each record whose index is in ends, and
// returns what the Writer wrote.
func writeFramed(t testing.TB, recs []rec, from int, ends map[int]bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w *Writer
	var err error
	if from == 0 {
		w, err = NewWriter(&buf)
	} else {
		done := make([]Entry, from)
		for i, r := range recs[:from] {
			done[i] = Entry{Kind: r.kind, Path: r.path}
		}
		w, err = Continue(&buf, done)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < len(recs); i++ {
		if ends[i] {
			if err := w.EndFrame(); err != nil {
				t.Fatal(err)
			}
		}
		if err := add(w, recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAll(data []byte, want string) ([]rec, error) {
	r, err := NewReader(bytes.NewReader(data), "test.pack", want)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []rec
	for {
		e, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		x := rec{kind: e.Kind, path: e.Path, target: e.Target}
		if e.Kind == File || e.Kind == Exec {
			b, err := io.ReadAll(r)
			if err != nil {
				return out, err
			}
			x.data = string(b)
			x.mtime = e.MTime
		} else if e.Kind == VolumeLink {
			x.size = e.Size
		}
		out = append(out, x)
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

var sample = []rec{
	{kind: Symlink, path: "bin/python", target: "/usr/bin/python3.11"},
	{kind: Exec, path: "bin/tool", data: "#!/bin/sh\necho hi\n", mtime: 1_700_000_000_123_456_789},
	{kind: Dir, path: "include"},
	{kind: Dir, path: "lib"},
	{kind: File, path: "lib/python3.11/site-packages/a/__init__.py", data: "x = 1\n"},
	{kind: File, path: "lib/python3.11/site-packages/a/empty.py", data: ""},
	{kind: VolumeLink, path: "lib/python3.11/site-packages/a/zbig.so", target: ".volboot/store/abc/a/zbig.so", size: 1 << 30},
	{kind: Symlink, path: "lib64", target: "lib"},
	{kind: File, path: "pyvenv.cfg", data: strings.Repeat("home = /usr/bin\n", 1000)},
}

func TestRoundTrip(t *testing.T) {
	data := write(t, sample)
	got, err := readAll(data, digest(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sample) {
		t.Fatalf("read %d records, wrote %d", len(got), len(sample))
	}
	for i := range sample {
		if got[i] != sample[i] {
			t.Errorf("record %d: got %+v, wrote %+v", i, got[i], sample[i])
		}
	}
}

// A pack written in frames reads as the same records; a Writer that
// goes on from a frame boundary another ended (Continue) writes exactly
// the rest of the bytes one Writer would have written; ending a frame
// with no record in it changes nothing.
func TestFramesContinue(t *testing.T) {
	ends := map[int]bool{3: true, 5: true, 8: true}
	whole := writeFramed(t, sample, 0, ends)
	if bytes.Equal(whole, write(t, sample)) {
		t.Fatal("a pack ended in frames has the bytes of one in a single frame: no frame was ended")
	}
	got, err := readAll(whole, digest(whole))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(sample) {
		t.Fatalf("read %d records, wrote %d", len(got), len(sample))
	}
	for i := range sample {
		if got[i] != sample[i] {
			t.Errorf("record %d: got %+v, wrote %+v", i, got[i], sample[i])
		}
	}
	for from := range ends {
		// The first writer's frames up to from, as it flushed them.
		var head bytes.Buffer
		w, err := NewWriter(&head)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range sample[:from] {
			if ends[i] {
				if err := w.EndFrame(); err != nil {
					t.Fatal(err)
				}
			}
			if err := add(w, r); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.EndFrame(); err != nil {
			t.Fatal(err)
		}
		if err := w.EndFrame(); err != nil { // no records: nothing
			t.Fatal(err)
		}
		rest := writeFramed(t, sample, from, ends)
		if joined := append(head.Bytes(), rest...); !bytes.Equal(joined, whole) {
			t.Errorf("continued at record %d: %d bytes, one writer wrote %d (or others)", from, len(joined), len(whole))
		}
	}
}

// Continue checks the records it is told were written, and what follows
// them, as one Writer would.
func TestContinueChecks(t *testing.T) {
	if _, err := Continue(io.Discard, []Entry{{Kind: File, Path: "b"}, {Kind: File, Path: "a"}}); err == nil {
		t.Error("records out of order accepted")
	}
	w, err := Continue(io.Discard, []Entry{{Kind: File, Path: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.File("a", false, 0, nil); err == nil {
		t.Error("a record before those written by the earlier writer accepted")
	}
	w, err = Continue(io.Discard, []Entry{{Kind: File, Path: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.File("b/c", false, 0, nil); err == nil {
		t.Error("a record below a file the earlier writer wrote accepted")
	}
}

// A reader that skips contents it does not read still lands on the next
// record.
func TestSkipsUnreadContent(t *testing.T) {
	data := write(t, sample)
	r, err := NewReader(bytes.NewReader(data), "p", digest(data))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := 0
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(sample) {
		t.Fatalf("%d records, want %d", n, len(sample))
	}
}

func TestWrongDigestRefused(t *testing.T) {
	data := write(t, sample)
	_, err := readAll(data, strings.Repeat("0", 64))
	if err == nil || !strings.Contains(err.Error(), "sha256") || !strings.Contains(err.Error(), "test.pack") {
		t.Fatalf("a pack read against another digest: %v", err)
	}
}

func TestDamageFound(t *testing.T) {
	data := write(t, sample)
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"cut short", data[:len(data)-5]},
		{"header only", data[:len(Magic)]},
		{"no header", data[len(Magic):]},
		{"other version", append([]byte("VBPACK99"), data[len(Magic):]...)},
		{"flipped byte", func() []byte { b := bytes.Clone(data); b[len(b)/2] ^= 0x55; return b }()},
		{"bytes after", append(bytes.Clone(data), 'x')},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := readAll(c.data, digest(data))
			if err == nil {
				t.Fatal("a damaged pack was read without error")
			}
			if !strings.Contains(err.Error(), "pack") {
				t.Errorf("error does not say it is the pack: %v", err)
			}
		})
	}
	// Without a digest, a pack cut short still fails: the end record is
	// missing.
	if _, err := readAll(data[:len(data)-5], ""); err == nil {
		t.Error("a pack cut short was read without a digest and without error")
	}
}

func TestWriterRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		recs []rec
	}{
		{"out of order", []rec{{kind: File, path: "b"}, {kind: File, path: "a"}}},
		{"duplicate", []rec{{kind: File, path: "a"}, {kind: File, path: "a"}}},
		{"below a file", []rec{{kind: File, path: "a"}, {kind: File, path: "a/b"}}},
		{"below a link", []rec{{kind: Symlink, path: "lib64", target: "/etc"}, {kind: File, path: "lib64/passwd"}}},
		{"dotdot", []rec{{kind: File, path: "a/../b"}}},
		{"absolute", []rec{{kind: File, path: "/etc/passwd"}}},
		{"volume target escapes", []rec{{kind: VolumeLink, path: "a", target: "../x"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, _ := NewWriter(&buf)
			var err error
			for _, r := range c.recs {
				switch r.kind {
				case File:
					err = errors.Join(err, w.File(r.path, false, 0, nil))
				case Symlink:
					err = errors.Join(err, w.Symlink(r.path, r.target))
				case VolumeLink:
					err = errors.Join(err, w.VolumeLink(r.path, r.target, 1))
				}
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// rawPack makes a pack of hand-written record bytes, bypassing the
// writer's checks, to show the reader makes them too.
func rawPack(t testing.TB, body []byte) []byte {
	var buf bytes.Buffer
	buf.WriteString(Magic)
	w, err := NewWriter(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	w.zw.Reset(&buf)
	w.zw.Write(body)
	w.zw.Close()
	return buf.Bytes()
}

func TestReaderRefusesWhatWriterWould(t *testing.T) {
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"below a link", []byte("S\x05lib64\x04/etcF\x0clib64/passwd\x00\x00E\x02")},
		{"dotdot", []byte("F\x04../a\x00\x00E\x01")},
		{"out of order", []byte("F\x01b\x00\x00F\x01a\x00\x00E\x02")},
		{"wrong count", []byte("F\x01a\x00\x00E\x05")},
		{"unknown kind", []byte("Q\x01a\x00E\x01")},
		{"volume target absolute", []byte("V\x01a\x04/etc\x01E\x01")},
		{"content cut", []byte("F\x01a\x00\x10abc")},
		{"after end", []byte("F\x01a\x00\x00E\x01more")},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := readAll(rawPack(t, c.body), ""); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if got, err := readAll(rawPack(t, []byte("F\x01a\x00\x02hiE\x01")), ""); err != nil || len(got) != 1 || got[0].data != "hi" {
		t.Fatalf("a hand-written good pack: %v %+v", err, got)
	}
}

func FuzzReader(f *testing.F) {
	f.Add(write(f, sample))
	f.Add(rawPack(f, []byte("F\x01a\x00\x02hiE\x01")))
	f.Add(rawPack(f, []byte("S\x05lib64\x04/etcF\x0clib64/passwd\x00\x00E\x02")))
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := readAll(data, "")
		if err != nil {
			return
		}
		// Whatever reads without error obeys the format's rules.
		var last string
		leaves := map[string]bool{}
		for i, r := range recs {
			if err := CheckPath(r.path); err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			if i > 0 && r.path <= last {
				t.Fatalf("record %d: %q after %q", i, r.path, last)
			}
			if q := leafAbove(r.path, leaves); q != "" {
				t.Fatalf("record %d: %q below %q", i, r.path, q)
			}
			if r.kind != Dir {
				leaves[r.path] = true
			}
			if r.kind == VolumeLink {
				if err := CheckPath(r.target); err != nil {
					t.Fatalf("record %d: target: %v", i, err)
				}
			}
			last = r.path
		}
	})
}
