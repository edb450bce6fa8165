#!/usr/bin/env python3
"""volboot's demo handler: warm-load once, then serve many requests.

Standard library only. What it does, in order:

1. Finds a model file in the volume's Hugging Face cache layout
   ($HF_HUB_CACHE/models--<org>--<name>/refs/<revision> names a commit;
   snapshots/<commit>/<file> is the file) and reads it into memory once:
   the "warm load" a real handler does with its weights.
2. Tells volboot it is ready: READY=1 on $NOTIFY_SOCKET (an AF_UNIX datagram
   socket; a leading '@' means the abstract namespace), when set.
3. Serves POST /run on 127.0.0.1:$DEMO_PORT: JSON in ({"input": {"name": ...}}
   or {"name": ...}), JSON out, computed from the loaded model bytes.
4. Exits 0 on SIGTERM or SIGINT after finishing requests in flight.

Environment:
  DEMO_MODEL_REPO      org/name of the model repo      (default volboot/tts-demo)
  DEMO_MODEL_FILE      path inside the snapshot         (default model.bin)
  DEMO_MODEL_REVISION  ref name or 40-hex commit        (default main)
  DEMO_PORT            port for POST /run               (default $PORT, else 8000)
  DEMO_HOST            address to bind                  (default 127.0.0.1)
  HF_HUB_CACHE         the hub cache (default $HF_HOME/hub, else
                       ~/.cache/huggingface/hub)
  VOLBOOT_GROUPS       comma list of usable groups, set by volboot
  VOLBOOT_DEGRADED     group=reason list, set by volboot
  VOLBOOT_CAPABILITIES path of a JSON file with the same facts, set by volboot
"""

import sys

# The first line of Python: volboot's benchmark measures the time to it.
print("demo_handler: starting", flush=True)

import hashlib
import http.server
import json
import os
import re
import signal
import socket
import threading
import time

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def log(msg):
    print("demo_handler: " + msg, flush=True)


def hub_cache():
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def resolve_model_file(cache, repo, filename, revision):
    """Return the path of filename in repo's snapshot for revision, or raise
    FileNotFoundError naming what is missing (the volume is not in sync)."""
    if repo.count("/") != 1:
        raise ValueError("DEMO_MODEL_REPO=%r: want org/name" % repo)
    repo_dir = os.path.join(cache, "models--" + repo.replace("/", "--"))
    if COMMIT_RE.match(revision):
        commit = revision
    else:
        ref = os.path.join(repo_dir, "refs", revision)
        try:
            with open(ref, encoding="ascii") as f:
                commit = f.read().strip()
        except FileNotFoundError:
            raise FileNotFoundError(
                "%s: no ref %r for %s; run `volboot sync` so the model is on the volume" % (ref, revision, repo)
            ) from None
        if not COMMIT_RE.match(commit):
            raise ValueError("%s: %r is not a 40-hex commit" % (ref, commit))
    path = os.path.join(repo_dir, "snapshots", commit, *filename.split("/"))
    if not os.path.isfile(path):
        raise FileNotFoundError("%s: model file missing from snapshot %s of %s" % (path, commit, repo))
    return path


def read_capabilities():
    path = os.environ.get("VOLBOOT_CAPABILITIES", "")
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        log("cannot read VOLBOOT_CAPABILITIES %s: %s" % (path, e))
        return {}


def notify(message):
    """Send one datagram to NOTIFY_SOCKET; a no-op when it is unset."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode("utf-8"), addr)
    except OSError as e:
        # Readiness is volboot's business; a lost datagram must not kill
        # the handler (volboot's readiness timeout will report it).
        log("cannot notify %s: %s" % (os.environ["NOTIFY_SOCKET"], e))
        return False
    return True


class Model:
    """The warm-loaded state every request shares (read-only after load)."""

    def __init__(self, path):
        t0 = time.monotonic()
        with open(path, "rb") as f:
            self.data = f.read()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.path = path
        self.load_seconds = time.monotonic() - t0

    def run(self, name):
        # Deterministic "inference" that needs the loaded bytes.
        voice = int(self.sha256[:8], 16) % 1000
        return {"greeting": "hello, %s, from voice %03d" % (name, voice)}


def make_handler(model, groups, capabilities):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, code, obj):
            body = json.dumps(obj, sort_keys=True).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            if self.path != "/run":
                return self.reply(404, {"error": "POST /run only"})
            try:
                n = int(self.headers.get("Content-Length", "0"))
                req = json.loads(self.rfile.read(n) or b"{}")
                if not isinstance(req, dict):
                    raise ValueError("request body must be a JSON object")
                inp = req.get("input", req)
                if not isinstance(inp, dict):
                    raise ValueError("input must be a JSON object")
                name = str(inp.get("name", "world"))
            except ValueError as e:
                return self.reply(400, {"error": str(e)})
            out = model.run(name)
            out.update(
                {
                    "model_sha256": model.sha256,
                    "model_bytes": len(model.data),
                    "groups": groups,
                    "generation": capabilities.get("generation"),
                }
            )
            self.reply(200, {"output": out})

        def do_GET(self):
            if self.path == "/ping":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.reply(404, {"error": "POST /run only"})

        def log_message(self, fmt, *args):
            log("request: " + (fmt % args))

    return Handler


def main():
    groups = [g for g in os.environ.get("VOLBOOT_GROUPS", "").split(",") if g]
    degraded = os.environ.get("VOLBOOT_DEGRADED", "")
    capabilities = read_capabilities()
    log("groups=%s degraded=%s generation=%s" % (",".join(groups) or "-", degraded or "-", capabilities.get("generation", "-")))

    repo = os.environ.get("DEMO_MODEL_REPO", "volboot/tts-demo")
    filename = os.environ.get("DEMO_MODEL_FILE", "model.bin")
    revision = os.environ.get("DEMO_MODEL_REVISION", "main")
    try:
        notify("STATUS=loading %s" % repo)
        path = resolve_model_file(hub_cache(), repo, filename, revision)
        model = Model(path)
    except (OSError, ValueError) as e:
        log("cannot load the model: %s" % e)
        return 1
    log("loaded %s (%d bytes, sha256 %s) in %.3fs" % (path, len(model.data), model.sha256, model.load_seconds))

    host = os.environ.get("DEMO_HOST", "127.0.0.1")
    port = int(os.environ.get("DEMO_PORT") or os.environ.get("PORT") or "8000")
    server = http.server.ThreadingHTTPServer((host, port), make_handler(model, groups, capabilities))
    server.daemon_threads = True

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # serve_forever runs in a thread so the main thread, where Python runs
    # signal handlers, stays free to call shutdown (which waits for it).
    serving = threading.Thread(target=server.serve_forever, name="serve", daemon=True)
    serving.start()
    log("serving POST /run on %s:%d" % (host, server.server_address[1]))
    notify("READY=1\nSTATUS=serving on port %d" % server.server_address[1])

    while not stop.wait(3600):
        pass
    notify("STOPPING=1")
    log("stopping")
    server.shutdown()
    server.server_close()
    serving.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
