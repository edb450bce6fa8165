package models

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// Status is what Check found for one model.
type Status struct {
	// Complete: refs (for a branch or tag) name a commit whose snapshot
	// links every file to a present blob (of the recorded size, when a
	// Snapshot was given).
	Complete bool
	// Commit is the commit the revision leads to on disk ("" if unknown).
	Commit string
	// Problems says what is missing or wrong, one entry per file or ref,
	// naming it (e.g. "F5TTS_v1_Base/vocab.txt: not in the snapshot").
	Problems []string
	// BadBlobs (Verify only) are blob paths whose content does not match
	// their name.
	BadBlobs []string
}

// Check reports, without network, whether m is complete on disk. It reads
// refs/{revision} (unless the revision is a commit), then for each file
// one Readlink and one Stat of its snapshot link (the Stat follows the link
// to the blob).
//
// With rec (the Snapshot of an earlier successful Sync) it checks that the
// ref still names rec's commit and, when rec lists files, exactly those:
// each link's target and each blob's size. Without rec (or without its
// files) it checks m's paths, and a glob
// pattern by listing the snapshot directory (it must match at least one
// file there); sizes are then not checked. Check never writes.
func Check(hubDir string, m Model, rec *Snapshot) Status {
	m = m.normalized()
	var st Status
	if err := m.validate(); err != nil {
		st.Problems = append(st.Problems, err.Error())
		return st
	}
	repoDir := RepoDir(hubDir, m.RepoType, m.Repo)
	if IsCommit(m.Revision) {
		st.Commit = m.Revision
	} else {
		ref := filepath.Join(repoDir, "refs", filepath.FromSlash(m.Revision))
		b, err := os.ReadFile(ref)
		c := strings.TrimSpace(string(b))
		switch {
		case err != nil:
			st.Problems = append(st.Problems, fmt.Sprintf("refs/%s: %v", m.Revision, shortErr(err)))
			return st
		case !IsCommit(c):
			st.Problems = append(st.Problems, fmt.Sprintf("refs/%s: %q is not a commit id", m.Revision, truncate(c, 60)))
			return st
		}
		st.Commit = c
	}
	if rec != nil && rec.Commit != "" && rec.Commit != st.Commit {
		st.Problems = append(st.Problems, fmt.Sprintf("revision %s leads to commit %s on disk, but %s was recorded", m.Revision, st.Commit, rec.Commit))
		return st
	}
	var files []FileInfo
	if rec != nil && len(rec.Files) > 0 {
		files = rec.Files
	} else {
		var listed []string
		for _, f := range m.Files {
			if !IsPattern(f) {
				files = append(files, FileInfo{Path: f, Size: -1})
				continue
			}
			if listed == nil {
				listed = listSnapshot(filepath.Join(repoDir, "snapshots", st.Commit))
			}
			n := 0
			for _, p := range listed {
				if ok, _ := MatchPattern(f, p); ok {
					files = append(files, FileInfo{Path: p, Size: -1})
					n++
				}
			}
			if n == 0 {
				st.Problems = append(st.Problems, fmt.Sprintf("%s: no file of the snapshot matches", f))
			}
		}
	}
	for _, f := range files {
		if p := checkFile(repoDir, st.Commit, f); p != "" {
			st.Problems = append(st.Problems, p)
		}
	}
	st.Complete = len(st.Problems) == 0
	return st
}

// checkFile returns what is wrong with one file of a snapshot, or "".
func checkFile(repoDir, commit string, f FileInfo) string {
	if err := checkRepoPath(f.Path); err != nil {
		return err.Error()
	}
	lp := snapshotPath(repoDir, commit, f.Path)
	target, err := os.Readlink(lp)
	if err != nil {
		return fmt.Sprintf("%s: not in the snapshot (%s)", f.Path, shortErr(err))
	}
	etag := path.Base(filepath.ToSlash(target))
	if target != blobTarget(f.Path, etag) || (f.ETag != "" && etag != f.ETag) {
		return fmt.Sprintf("%s: links to %s, not to its blob", f.Path, target)
	}
	fi, err := os.Stat(lp)
	if err != nil {
		return fmt.Sprintf("%s: blob %s is missing (%s)", f.Path, etag, shortErr(err))
	}
	if !fi.Mode().IsRegular() {
		return fmt.Sprintf("%s: blob %s is not a regular file", f.Path, etag)
	}
	if f.Size >= 0 && fi.Size() != f.Size {
		return fmt.Sprintf("%s: blob %s has %d bytes, expected %d", f.Path, etag, fi.Size(), f.Size)
	}
	return ""
}

// listSnapshot returns the '/'-separated paths of the links under a
// snapshot directory (nil if it does not exist).
func listSnapshot(dir string) []string {
	out := []string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if _, tmp := atomicfile.ParseTempName(d.Name()); tmp {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func shortErr(err error) string {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// Verify is Check plus the content: it hashes every blob the snapshot links
// to (sha256 for a 64-hex name, git blob sha1 for a 40-hex name; other names
// are checked by size only, as Sync did) and lists those whose content does
// not match their name in BadBlobs, so that repair can remove them and Sync
// fetch them again. It reads every byte: it is for `status --verify` and
// `repair`, never for the boot path.
func Verify(hubDir string, m Model, rec *Snapshot) Status {
	st := Check(hubDir, m, rec)
	if st.Commit == "" {
		return st
	}
	m = m.normalized()
	repoDir := RepoDir(hubDir, m.RepoType, m.Repo)
	seen := map[string]bool{}
	for _, p := range listSnapshot(filepath.Join(repoDir, "snapshots", st.Commit)) {
		target, err := os.Readlink(snapshotPath(repoDir, st.Commit, p))
		if err != nil {
			continue
		}
		etag := path.Base(filepath.ToSlash(target))
		blob := filepath.Join(repoDir, "blobs", etag)
		if seen[blob] {
			continue
		}
		seen[blob] = true
		ok, err := blobMatches(blob, etag)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				st.Problems = append(st.Problems, fmt.Sprintf("%s: %v", p, err))
			}
			continue
		}
		if !ok {
			st.BadBlobs = append(st.BadBlobs, blob)
			st.Problems = append(st.Problems, fmt.Sprintf("%s: blob %s does not match its name (content changed on disk)", p, etag))
		}
	}
	st.Complete = len(st.Problems) == 0
	return st
}

// blobMatches hashes a blob and compares the digest its name states.
func blobMatches(blob, etag string) (bool, error) {
	var h hash.Hash
	switch {
	case isHex(etag, 64):
		h = sha256.New()
	case isHex(etag, 40):
		h = sha1.New()
	default:
		return true, nil
	}
	f, err := os.Open(blob)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if len(etag) == 40 {
		fmt.Fprintf(h, "blob %d\x00", fi.Size())
	}
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		return false, fmt.Errorf("read blob: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)) == etag, nil
}
