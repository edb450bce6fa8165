"""Look a file up in a Hugging Face hub cache the way huggingface_hub does
(try_to_load_from_cache / hf_hub_download with local_files_only=True), using
only the standard library, and check the layout rules on the way.

usage: hf_lookup.py CACHE_DIR REPO_TYPE REPO_ID REVISION PATH
prints one JSON object: {"status": "found"|"no_exist"|"absent", "sha256",
"size", "blob", "commit"}; exits 1 with a message when the layout is wrong.
"""
import hashlib
import json
import os
import sys


def fail(msg):
    print("layout error: " + msg, file=sys.stderr)
    sys.exit(1)


def main():
    cache, repo_type, repo_id, revision, filename = sys.argv[1:6]
    # huggingface_hub: f"{repo_type}s--" + "--".join(repo_id.split("/"))
    folder = os.path.join(cache, repo_type + "s--" + "--".join(repo_id.split("/")))
    if not os.path.isdir(folder):
        print(json.dumps({"status": "absent"}))
        return
    commit = revision
    ref = os.path.join(folder, "refs", revision)
    if os.path.isfile(ref):
        with open(ref) as f:
            commit = f.read()
        if len(commit) != 40 or commit.strip() != commit:
            fail("refs/%s holds %r, not a bare commit id" % (revision, commit))
    if os.path.isfile(os.path.join(folder, ".no_exist", commit, filename)):
        print(json.dumps({"status": "no_exist", "commit": commit}))
        return
    pointer = os.path.join(folder, "snapshots", commit, filename)
    if not os.path.isfile(pointer):
        print(json.dumps({"status": "absent", "commit": commit}))
        return
    if not os.path.islink(pointer):
        fail("%s is not a symlink" % pointer)
    target = os.readlink(pointer)
    if os.path.isabs(target):
        fail("%s links to an absolute path %s" % (pointer, target))
    # huggingface_hub: os.path.relpath(blob_path, os.path.dirname(pointer_path))
    blob = os.path.realpath(pointer)
    blobs_dir = os.path.realpath(os.path.join(folder, "blobs"))
    if os.path.dirname(blob) != blobs_dir:
        fail("%s resolves to %s, outside blobs/" % (pointer, blob))
    expected = os.path.relpath(blob, os.path.dirname(pointer))
    if target != expected:
        fail("%s links to %s, huggingface_hub would write %s" % (pointer, target, expected))
    h = hashlib.sha256()
    size = 0
    with open(pointer, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    print(json.dumps({"status": "found", "sha256": h.hexdigest(), "size": size,
                      "blob": os.path.basename(blob), "commit": commit}))


main()
