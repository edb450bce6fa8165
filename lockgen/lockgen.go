// Package lockgen makes the PEP 751 lock (pylock.toml) of a manifest:
// `volboot lock`. (The volume lock is package lockfile; this is the
// package lock.)
//
// uv resolves; volboot does not resolve anything itself. uv is pinned at
// UVVersion, found on PATH or installed from PyPI into volboot's cache with
// pip's --require-hashes (UVFinder).
package lockgen
