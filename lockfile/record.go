package lockfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// SchemaVersion is the schema number of holder and lease records. Fields may
// be added without changing it (readers ignore unknown fields); a change that
// old readers would misread bumps it.
const SchemaVersion = 1

// maxRecordSize bounds what a reader loads: records are a few hundred bytes,
// and a corrupted multi-gigabyte file must not exhaust memory.
const maxRecordSize = 64 << 10

// maxPhaseBytes bounds the phase text; longer text is cut at a rune boundary.
const maxPhaseBytes = 512

// maxIDBytes bounds identifiers (holder id, worker id, generation, host).
const maxIDBytes = 255

// Identity says which process wrote a record and lets a reader on the same
// machine decide whether that process is still alive.
type Identity struct {
	// Host is the writer's host name, for people and for the same-host rule.
	Host string `json:"host"`
	// PID is the writer's process id in its pid namespace.
	PID int `json:"pid"`
	// PIDStart is the process start time in clock ticks since boot (field 22
	// of /proc/<pid>/stat), 0 when unknown. With it a reused pid is told
	// apart from the original process.
	PIDStart uint64 `json:"pid_start,omitempty"`
	// PIDNamespace is the link text of /proc/self/ns/pid, such as
	// "pid:[4026531836]"; empty when unknown.
	PIDNamespace string `json:"pid_ns,omitempty"`
	// BootID is /proc/sys/kernel/random/boot_id; empty when unknown.
	BootID string `json:"boot_id,omitempty"`
}

// Holder is the record in holder.json and in each claims/<epoch> file.
type Holder struct {
	Schema   int    `json:"schema"`
	HolderID string `json:"holder_id"`
	Identity
	// Mode is the mode the holder runs in; HasFlock says whether it holds
	// flock on the lock file (a lease-only takeover does not).
	Mode     Mode   `json:"mode"`
	HasFlock bool   `json:"has_flock"`
	Epoch    uint64 `json:"epoch"`
	// Started and Updated are the holder's own clock, for people only: no
	// decision compares them with another host's clock.
	Started   time.Time `json:"started"`
	Updated   time.Time `json:"updated"`
	Heartbeat uint64    `json:"heartbeat"`
	Phase     string    `json:"phase,omitempty"`
	Released  bool      `json:"released,omitempty"`
}

// LeaseRecord is the content of leases/<worker-id>.json.
type LeaseRecord struct {
	Schema     int    `json:"schema"`
	WorkerID   string `json:"worker_id"`
	Generation string `json:"generation"`
	Identity
	Started   time.Time `json:"started"`
	Updated   time.Time `json:"updated"`
	Heartbeat uint64    `json:"heartbeat"`
}

// ParseHolder parses and validates a holder record. Errors name the field
// and what is wrong; callers add the file name.
func ParseHolder(data []byte) (Holder, error) {
	var h Holder
	if err := decodeStrict(data, &h); err != nil {
		return Holder{}, err
	}
	if err := h.validate(); err != nil {
		return Holder{}, err
	}
	return h, nil
}

// ParseLease parses and validates a lease record.
func ParseLease(data []byte) (LeaseRecord, error) {
	var l LeaseRecord
	if err := decodeStrict(data, &l); err != nil {
		return LeaseRecord{}, err
	}
	if err := l.validate(); err != nil {
		return LeaseRecord{}, err
	}
	return l, nil
}

// decodeStrict decodes exactly one JSON object. Unknown fields are allowed
// (newer writers may add some); trailing data is not.
func decodeStrict(data []byte, v any) error {
	if len(data) > maxRecordSize {
		return fmt.Errorf("record is %d bytes, more than the %d a record may have", len(data), maxRecordSize)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return errors.New("record is empty")
	}
	if trimmed[0] != '{' {
		return errors.New("record is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON: data after the record")
	}
	return nil
}

func (h *Holder) validate() error {
	if err := checkSchema(h.Schema); err != nil {
		return err
	}
	if err := checkName("holder_id", h.HolderID); err != nil {
		return err
	}
	if err := h.Identity.validate(); err != nil {
		return err
	}
	if _, err := ParseMode(string(h.Mode)); err != nil || h.Mode == "" {
		return fmt.Errorf("field \"mode\": %q is not flock, lease-only or off", h.Mode)
	}
	if h.Epoch == 0 {
		return errors.New("field \"epoch\": missing or 0 (epochs start at 1)")
	}
	if err := checkTime("started", h.Started); err != nil {
		return err
	}
	if err := checkTime("updated", h.Updated); err != nil {
		return err
	}
	if len(h.Phase) > maxPhaseBytes || !utf8.ValidString(h.Phase) {
		return fmt.Errorf("field \"phase\": not valid UTF-8 text of at most %d bytes", maxPhaseBytes)
	}
	return nil
}

func (l *LeaseRecord) validate() error {
	if err := checkSchema(l.Schema); err != nil {
		return err
	}
	if err := checkWorkerID(l.WorkerID); err != nil {
		return fmt.Errorf("field \"worker_id\": %w", err)
	}
	if err := checkName("generation", l.Generation); err != nil {
		return err
	}
	if err := l.Identity.validate(); err != nil {
		return err
	}
	if err := checkTime("started", l.Started); err != nil {
		return err
	}
	return checkTime("updated", l.Updated)
}

func (id *Identity) validate() error {
	if err := checkName("host", id.Host); err != nil {
		return err
	}
	if id.PID <= 0 || id.PID > math.MaxInt32 {
		return fmt.Errorf("field \"pid\": %d is not a process id", id.PID)
	}
	if len(id.PIDNamespace) > maxIDBytes || !printable(id.PIDNamespace) {
		return errors.New("field \"pid_ns\": not printable text of at most 255 bytes")
	}
	if len(id.BootID) > maxIDBytes || !printable(id.BootID) {
		return errors.New("field \"boot_id\": not printable text of at most 255 bytes")
	}
	return nil
}

func checkSchema(n int) error {
	switch {
	case n == SchemaVersion:
		return nil
	case n == 0:
		return errors.New("field \"schema\": missing")
	case n > SchemaVersion:
		return fmt.Errorf("field \"schema\": %d is newer than this volboot understands (%d): upgrade volboot on this worker", n, SchemaVersion)
	default:
		return fmt.Errorf("field \"schema\": %d is not a known schema", n)
	}
}

func checkName(field, s string) error {
	if s == "" {
		return fmt.Errorf("field %q: missing", field)
	}
	if len(s) > maxIDBytes || !printable(s) {
		return fmt.Errorf("field %q: not printable text of at most %d bytes", field, maxIDBytes)
	}
	return nil
}

// checkTime refuses times that would not survive a round trip through
// encoding/json (which cannot write years outside 0..9999).
func checkTime(field string, t time.Time) error {
	if y := t.Year(); y < 0 || y > 9999 {
		return fmt.Errorf("field %q: year %d out of range", field, y)
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// checkWorkerID accepts names that are safe as a file name on every
// filesystem we meet: letters, digits, '.', '_' and '-', not starting with
// '.', at most 128 bytes.
func checkWorkerID(s string) error {
	if s == "" {
		return errors.New("empty worker id")
	}
	if len(s) > 128 {
		return fmt.Errorf("worker id %q is longer than 128 bytes", s)
	}
	if s[0] == '.' {
		return fmt.Errorf("worker id %q starts with '.'", s)
	}
	for _, r := range s {
		ok := r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
		if !ok {
			return fmt.Errorf("worker id %q has %q: use only letters, digits, '.', '_' and '-'", s, r)
		}
	}
	return nil
}

// cleanPhase makes caller-supplied phase text safe to store and log: control
// characters become spaces and the text is cut to maxPhaseBytes.
func cleanPhase(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxPhaseBytes {
		cut := maxPhaseBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// readRecordFile reads a record file, refusing more than maxRecordSize
// bytes, and returns its modification time from the open file (no second
// lookup by name, which costs a round trip on a network filesystem).
func readRecordFile(path string) ([]byte, time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	var mtime time.Time
	if info, err := f.Stat(); err == nil {
		mtime = info.ModTime()
	}
	data, err := io.ReadAll(io.LimitReader(f, maxRecordSize+1))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read %s: %w", path, err)
	}
	return data, mtime, nil
}

func marshalRecord(v any) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}
