package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/volboot/volboot/bootstrap/atomicfile"
	"github.com/volboot/volboot/bootstrap/locallayout"
	"github.com/volboot/volboot/bootstrap/models"
)

// StateSchema is the version of state.json's format.
const StateSchema = 1

// Group states (DESIGN.md §14).
const (
	GroupInstalled = "installed"
	GroupSkipped   = "skipped"  // its `when` does not hold on this hardware
	GroupDegraded  = "degraded" // optional, failed; repair or a later sync retries it
	GroupMissing   = "missing"  // not installed yet
)

// State is .volboot/state.json: what the volume holds, written only under
// the volume lock, read without it. It is an index, never the truth about
// completeness: a generation is complete when its marker exists, whatever
// state says, so a lost or stale state only costs a slower boot.
type State struct {
	Schema int `json:"schema"`
	// Keys maps a boot key (manifest, lock, interpreter and GPU
	// fingerprints) to the generation that boot runs.
	Keys map[string]string `json:"keys"`
	// Generations describes each generation volboot built.
	Generations map[string]*Generation `json:"generations"`
	// Current is the generation `venv` points at.
	Current string `json:"current,omitempty"`
	// LastSync reports the most recent sync that changed anything.
	LastSync *SyncReport `json:"last_sync,omitempty"`
}

// Generation records one built generation.
type Generation struct {
	ID          string          `json:"id"`
	Created     time.Time       `json:"created"`
	Key         string          `json:"key"`
	Manifest    string          `json:"manifest"` // sha256 of the manifest's bytes
	Lock        string          `json:"lock"`     // sha256 of the lock's bytes
	Interpreter string          `json:"interpreter"`
	Python      string          `json:"python"` // the interpreter path as configured
	Groups      []GroupOutcome  `json:"groups"`
	Packages    []PackageRecord `json:"packages"`
	GPU         json.RawMessage `json:"gpu,omitempty"` // the GPU facts it was planned for
	Models      []ModelRecord   `json:"models,omitempty"`
	// Pack is the generation's pack of small files for the local layout
	// (DESIGN.md §5.8); nil for a generation built before packs.
	Pack *locallayout.PackRecord `json:"pack,omitempty"`
}

// GroupOutcome is one group's state in a generation.
type GroupOutcome struct {
	Name       string     `json:"name"`
	State      string     `json:"state"`
	Reason     string     `json:"reason,omitempty"`
	Required   bool       `json:"required"`
	Attempts   int        `json:"attempts,omitempty"`
	RetryAfter *time.Time `json:"retry_after,omitempty"` // degraded: sync retries after this
	// PackagesInstalled: degraded by its models alone, its packages are in
	// the generation all the same.
	PackagesInstalled bool `json:"packages_installed,omitempty"`
}

// modelsOnly reports whether the group is degraded by its models alone.
func (o GroupOutcome) modelsOnly() bool { return o.State == GroupDegraded && o.PackagesInstalled }

// PackageRecord is one wheel in a generation. A wheel built from an sdist
// has its build key (sdist.Key) for SHA256, the sdist's file name for
// Filename, and the sdist's sha256 in Sdist.
type PackageRecord struct {
	Name      string   `json:"name"`
	Version   string   `json:"version"`
	SHA256    string   `json:"sha256"`
	Filename  string   `json:"filename"`
	Sdist     string   `json:"sdist,omitempty"`
	Groups    []string `json:"groups"`
	Requested bool     `json:"requested,omitempty"`
}

// ModelRecord is one model's outcome.
type ModelRecord struct {
	Repo     string `json:"repo"`
	Revision string `json:"revision"`
	Commit   string `json:"commit,omitempty"`
	Group    string `json:"group"`
	OK       bool   `json:"ok"`
	Reason   string `json:"reason,omitempty"`
	// Files are the snapshot's files with their blobs and sizes, so that
	// status can check sizes (and, with --verify, content).
	Files []models.FileInfo `json:"files,omitempty"`
}

// SyncReport summarizes one sync.
type SyncReport struct {
	Generation string        `json:"generation"`
	Started    time.Time     `json:"started"`
	Duration   time.Duration `json:"duration_ns"`
	Downloaded int64         `json:"downloaded_bytes"`
	Unpacked   int           `json:"unpacked_wheels"`
	Host       string        `json:"host"`
}

// ReadState reads the state file. A missing file is an empty state; a file
// that does not parse is an error naming it (state is rewritten whole and
// atomically, so that means someone else wrote it).
func ReadState(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return parseState(path, data)
}

// ErrStateDamaged: state.json does not parse (a newer schema is another
// error: that file is not ours to rewrite).
var ErrStateDamaged = errors.New("not a volboot state file")

func newState() *State {
	return &State{Schema: StateSchema, Keys: map[string]string{}, Generations: map[string]*Generation{}}
}

func parseState(path string, data []byte) (*State, error) {
	s := newState()
	if err := json.Unmarshal(data, s); err != nil {
		return nil, fmt.Errorf("%s: %w (%v): run `volboot repair`, which writes it anew", path, ErrStateDamaged, err)
	}
	if s.Schema != StateSchema {
		return nil, fmt.Errorf("%s: state schema %d, this volboot reads %d: use a matching volboot, or move the file aside and run `volboot repair`", path, s.Schema, StateSchema)
	}
	if s.Keys == nil {
		s.Keys = map[string]string{}
	}
	if s.Generations == nil {
		s.Generations = map[string]*Generation{}
	}
	return s, nil
}

// Write writes the state atomically.
func (s *State) Write(path string) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o644)
}

// GenerationIDs lists the recorded generations, newest first.
func (s *State) GenerationIDs() []string {
	ids := make([]string, 0, len(s.Generations))
	for id := range s.Generations {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		return s.Generations[ids[i]].Created.After(s.Generations[ids[j]].Created)
	})
	return ids
}

// dueForRetry reports whether a degraded group of g should be retried now.
func (g *Generation) dueForRetry(now time.Time) bool {
	for _, o := range g.Groups {
		if o.State == GroupDegraded && o.RetryAfter != nil && !o.waitingForRetry(now) {
			return true
		}
		if o.State == GroupDegraded && o.Required {
			return true // missing its models: every boot tries them again
		}
	}
	return false
}

// maxRetryDelay is the longest a degraded group waits for its next try.
const maxRetryDelay = 24 * time.Hour

// waitingForRetry reports whether a degraded group's next try is still
// ahead. A retry time further ahead than maxRetryDelay cannot have been
// set by an honest clock (a writer whose clock runs ahead of ours): it
// counts as due, or the group would wait for as long as that skew lasts.
func (o GroupOutcome) waitingForRetry(now time.Time) bool {
	return o.RetryAfter != nil && now.Before(*o.RetryAfter) && o.RetryAfter.Sub(now) <= maxRetryDelay
}

// similar returns the newest generation built from the same manifest, lock
// and interpreter, or nil.
func (s *State) similar(manifest, lock, interpreter string) *Generation {
	for _, id := range s.GenerationIDs() {
		g := s.Generations[id]
		if g.Manifest == manifest && g.Lock == lock && g.Interpreter == interpreter {
			return g
		}
	}
	return nil
}

// writeBootRecord writes the fast path's record of g for its boot key: the
// generation without its package list, so that its size does not grow with
// the stack or with the volume's history.
func writeBootRecord(path string, g *Generation) error {
	rec := *g
	rec.Packages = nil
	data, err := json.Marshal(struct {
		Schema int `json:"schema"`
		*Generation
	}{StateSchema, &rec})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o644)
}

// readBootRecord reads a boot record; any problem is an error (the caller
// then takes the full path, which rewrites it).
func readBootRecord(path string) (*Generation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rec struct {
		Schema int `json:"schema"`
		Generation
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if rec.Schema != StateSchema || rec.ID == "" {
		return nil, fmt.Errorf("%s: not a boot record of schema %d", path, StateSchema)
	}
	return &rec.Generation, nil
}
