package models

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/volboot/volboot/bootstrap/atomicfile"
)

// RepoDirName is the cache folder of a repository, as huggingface_hub names
// it: "{type}s--" + the repo id with "/" replaced by "--"
// (models--SWivid--F5-TTS, datasets--org--name, spaces--org--name).
func RepoDirName(repoType, repo string) string {
	return repoType + "s--" + strings.ReplaceAll(repo, "/", "--")
}

// RepoDir is RepoDirName under the hub cache directory.
func RepoDir(hubDir, repoType, repo string) string {
	return filepath.Join(hubDir, RepoDirName(repoType, repo))
}

// blobTarget is the relative symlink target from snapshots/{commit}/{p} to
// blobs/{etag}: one "../" per directory between the link and the repo
// folder (the commit directory, the snapshots directory, and each
// directory of p).
func blobTarget(p, etag string) string {
	return strings.Repeat("../", 2+strings.Count(p, "/")) + "blobs/" + etag
}

// isHex reports whether s is n lowercase hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// IsCommit reports whether rev is a full commit id (40 lowercase hex).
func IsCommit(rev string) bool { return isHex(rev, 40) }

// NormalizeETag turns an ETag header into the blob name huggingface_hub
// uses: without a weak-validator prefix "W/" and without the quotes.
func NormalizeETag(h string) string {
	h = strings.TrimSpace(h)
	h = strings.TrimPrefix(h, "W/")
	return strings.Trim(h, `"`)
}

// checkETag makes sure a normalized ETag is usable as a file name in
// blobs/: 40 or 64 lowercase hex (git blob sha1, sha256), or another opaque
// token of letters, digits, '-' and '_' (no '.', so that it never collides
// with "<etag>.part" files or reaches a parent directory).
func checkETag(etag string) error {
	if etag == "" {
		return errors.New("no ETag")
	}
	if len(etag) > 128 {
		return fmt.Errorf("ETag %.20q... is longer than 128 characters", etag)
	}
	for _, c := range etag {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_') {
			return fmt.Errorf("ETag %q has a character (%q) that cannot be part of a blob name", etag, c)
		}
	}
	return nil
}

// checkRepoPath accepts a path inside a repository that can be joined
// under snapshots/{commit}/ without leaving it: relative, '/'-separated, no
// empty, "." or ".." segment, no backslash or NUL.
func checkRepoPath(p string) error {
	if p == "" {
		return errors.New("empty path")
	}
	if strings.ContainsAny(p, "\\\x00") {
		return fmt.Errorf("path %q contains a backslash or NUL", p)
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q is absolute", p)
	}
	for _, s := range strings.Split(p, "/") {
		if s == "" || s == "." || s == ".." {
			return fmt.Errorf("path %q has an empty, \".\" or \"..\" segment", p)
		}
	}
	return nil
}

// checkRepoID accepts "name" or "org/name" with segments of letters,
// digits, '-', '_' and '.', none starting or ending with '-' or '.', and
// no "--" or ".." (the hub refuses these too; "--" would make the cache
// folder name ambiguous).
func checkRepoID(id string) error {
	segs := strings.Split(id, "/")
	if len(segs) > 2 || id == "" {
		return fmt.Errorf("repo %q: want \"org/name\" or \"name\"", id)
	}
	for _, s := range segs {
		if s == "" || len(s) > 96 {
			return fmt.Errorf("repo %q: empty or overlong name", id)
		}
		if strings.Contains(s, "--") || strings.Contains(s, "..") || strings.Trim(s, "-.") != s {
			return fmt.Errorf("repo %q: names may not contain \"--\" or \"..\" or start or end with '-' or '.'", id)
		}
		for _, c := range s {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
				return fmt.Errorf("repo %q: character %q is not allowed", id, c)
			}
		}
	}
	return nil
}

// checkRevision accepts a branch, tag or commit that is safe both in a URL
// (it is path-escaped there) and as refs/{revision} (where, as in
// huggingface_hub, "refs/pr/1" becomes nested directories).
func checkRevision(rev string) error {
	if rev == "" {
		return errors.New("empty revision")
	}
	if err := checkRepoPath(rev); err != nil {
		return fmt.Errorf("revision %q is not a branch, tag or commit: %w", rev, err)
	}
	for _, c := range rev {
		if c < 0x20 || c == 0x7f || c == ' ' {
			return fmt.Errorf("revision %q contains a space or control character", rev)
		}
	}
	return nil
}

func checkRepoType(t string) error {
	switch t {
	case "model", "dataset", "space":
		return nil
	}
	return fmt.Errorf("repo type %q: want model, dataset or space", t)
}

// urlPrefix is what goes between the endpoint and the repo id in resolve
// URLs.
func urlPrefix(repoType string) string {
	if repoType == "model" {
		return ""
	}
	return repoType + "s/"
}

// escapePath escapes each segment of a repo path or id for a URL, keeping
// the slashes between them.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = pathEscape(s)
	}
	return strings.Join(segs, "/")
}

// pathEscape escapes a segment like Python's urllib.parse.quote(s, safe=""),
// which huggingface_hub applies to revisions and file paths: everything but
// unreserved characters is percent-encoded (Go's url.PathEscape would leave
// some sub-delimiters).
func pathEscape(s string) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

// writeLink makes linkPath a symlink to target, atomically: a symlink under
// a temporary name, renamed over linkPath. It does nothing when linkPath is
// already that symlink. The parent directory must exist; the caller syncs
// it.
func writeLink(linkPath, target string) (changed bool, err error) {
	if cur, err := os.Readlink(linkPath); err == nil && cur == target {
		return false, nil
	}
	tmp := atomicfile.TempName(linkPath)
	if err := os.Symlink(target, tmp); err != nil {
		return false, fmt.Errorf("create symlink for %s: %w", linkPath, err)
	}
	if err := os.Rename(tmp, linkPath); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("rename symlink %s to %s: %w", tmp, linkPath, err)
	}
	return true, nil
}

// writeSmall writes content to p atomically unless p already holds exactly
// that, creating p's directory.
func writeSmall(p string, content []byte) error {
	if cur, err := os.ReadFile(p); err == nil && string(cur) == string(content) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("create directory for %s: %w", p, err)
	}
	return atomicfile.Write(p, content, 0o644)
}

// snapshotPath is snapshots/{commit}/{p} in the repo folder, with p's
// slashes made native.
func snapshotPath(repoDir, commit, p string) string {
	return filepath.Join(repoDir, "snapshots", commit, filepath.FromSlash(path.Clean(p)))
}
