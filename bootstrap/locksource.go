package bootstrap

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"

	"github.com/volboot/volboot/bootstrap/pylock"
)

// LockSource is a lock file's bytes, parsed only when needed. The in-sync
// boot only hashes them (a few hundred microseconds for the F5-TTS stack's
// lock, where parsing it would cost tens of milliseconds).
type LockSource struct {
	Name   string // the file name, for errors and relative wheel paths
	Data   []byte
	Digest string // sha256 of Data

	once   sync.Once
	parsed *pylock.Lock
	err    error
}

// NewLockSource wraps a lock's bytes.
func NewLockSource(name string, data []byte) *LockSource {
	sum := sha256.Sum256(data)
	return &LockSource{Name: name, Data: data, Digest: hex.EncodeToString(sum[:])}
}

// Parse parses the lock once and returns the result every time.
func (s *LockSource) Parse() (*pylock.Lock, error) {
	s.once.Do(func() {
		s.parsed, s.err = pylock.Parse(s.Name, s.Data)
		if s.err != nil {
			s.err = &InputError{Err: s.err}
		}
	})
	return s.parsed, s.err
}

// InputError is a problem with the manifest or the lock, not with the
// volume or the network: fixing the input is the way out (exit code 2).
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }
