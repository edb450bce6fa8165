// Package lockgen makes the PEP 751 lock (pylock.toml) of a manifest:
// `volboot lock`. (The volume lock is package lockfile; this is the
// package lock.)
//
// uv resolves; volboot does not resolve anything itself. uv is pinned at
// UVVersion, found on PATH or installed from PyPI into volboot's cache with
// pip's --require-hashes (UVFinder). Resolution is for the manifest's
// target, not the machine running it: uv's --python-platform and
// --python-version come from manifests.Platform, so a CPU laptop locks for
// a GPU worker.
//
// What volboot adds to uv:
//
//   - Group membership. uv's `pip compile` knows nothing of groups, and
//     `uv export` of a project flattens them. Lock resolves every group
//     together (one version per package across groups), then each group on
//     its own constrained to those joint pins (uv's --constraints), and
//     marks each package with the groups whose resolution holds it:
//     `'asr' in dependency_groups or 'tts' in dependency_groups`, combined
//     with any environment marker uv wrote. The markers are checked by
//     evaluating them for every group before anything is written.
//   - Checks. Every sdist and wheel carries url, size and sha256 (ParseUVLock
//     refuses uv output without them); a direct-URL file, whose size uv does
//     not write, is read once to measure it and check its sha256, and a
//     wheel among them becomes a [[packages.wheels]] entry that volboot can
//     install. Each package that has only an sdist is read to see whether it
//     holds native code (flash-attn does: a worker cannot build it) and
//     reported, with how to pin a wheel instead.
//   - Failure isolation. When the joint resolution fails, groups are added
//     one at a time (required first, in manifest order); a required group
//     that cannot be added is an error and nothing is written, an optional
//     one is left out of the lock with uv's words as the reason, and the
//     rest is locked.
//   - The inputs, under [tool.volboot], so that Check can tell a lock that
//     no longer matches its manifest without any network.
//
// The result is checked with manifests.CheckLock for the platform before
// the caller writes it.
package lockgen
