#!/usr/bin/env python3
"""A RunPod serverless F5-TTS handler for volboot.

volboot installs the pinned stack and the model files onto the network
volume, then starts this file from the worker's generation with the
environment of DESIGN.md §8. This handler:

* reads VOLBOOT_GROUPS and uses optional groups only when present:
  "flash-attn" switches F5-TTS's attention to flash-attn (GPUs with compute
  capability >= 8.0; volboot skips the group elsewhere), "asr" makes whisperx
  available for transcribing reference audio;
* warm-loads F5-TTS onto the GPU once at start (4-6 GB resident);
* loads whisperx only for a request that needs it and frees its GPU memory
  afterwards (2-4 GB, temporary), so both fit a 16 GB card beside each other
  only briefly;
* reports readiness on NOTIFY_SOCKET (READY=1), then calls
  runpod.serverless.start.

The model files come from the volume's Hugging Face cache (HF_HUB_CACHE,
set by volboot), each at the commit volboot fetched (the "models" of
VOLBOOT_CAPABILITIES; F5_REVISION, VOCOS_REVISION and WHISPER_REVISION
override); nothing is downloaded at run time (HF_HUB_OFFLINE=1), so a
missing file is an error that says to run `volboot sync`. The manifest must
therefore list the vocoder (charactr/vocos-mel-24khz: config.yaml and
pytorch_model.bin) beside the F5-TTS checkpoint and vocab.

Request input (job["input"]):
  gen_text         text to speak (required)
  ref_audio_b64    reference voice, base64 of a WAV/MP3 (or ref_audio_path,
                   a file on the volume)
  ref_text         what the reference says; when empty it is transcribed
                   with whisperx (group "asr") or, without it, by F5-TTS's
                   own ASR pipeline
  speed, nfe_step, seed   passed to F5-TTS
  task             "tts" (default) or "transcribe" (needs group "asr")
Output: {"audio_b64": WAV base64, "sample_rate": 24000, "seed": n,
         "ref_text": "...", "groups": [...]}.

It cannot serve here (torch, f5-tts, whisperx and runpod are not installed
in volboot's test environment); volboot's tests byte-compile it and check
which model files it opens (examples_test.go).
"""

import sys

print("runpod_handler: starting", flush=True)

import base64
import gc
import json
import os
import socket
import tempfile
import threading
import time

# Everything comes from the volume; never reach for the network at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

GROUPS = frozenset(g for g in os.environ.get("VOLBOOT_GROUPS", "").split(",") if g)
DEGRADED = os.environ.get("VOLBOOT_DEGRADED", "")
USE_FLASH_ATTN = "flash-attn" in GROUPS
HAVE_ASR = "asr" in GROUPS



def capabilities(on_error=None):
    """The VOLBOOT_CAPABILITIES file volboot wrote for this boot, as a dict;
    {} without one, or when it cannot be read (on_error gets the error)."""
    path = os.environ.get("VOLBOOT_CAPABILITIES")
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            caps = json.load(f)
    except (OSError, ValueError) as e:
        if on_error:
            on_error(e)
        return {}
    return caps if isinstance(caps, dict) else {}


def volboot_models():
    """The model records volboot wrote for this boot (the "models" of the
    capabilities: repo, revision, commit, ok, reason); [] when there are
    none."""
    return capabilities().get("models") or []


def pinned_revision(repo, env):
    """The revision to open repo at: $env when set, else the commit volboot
    fetched for the manifest's [[model]] of repo, else "main". A manifest
    pins commits, and the hub cache then holds snapshots/<commit> but no
    refs/main: asking for "main" offline would find nothing."""
    if os.environ.get(env):
        return os.environ[env]
    for m in volboot_models():
        if m.get("repo") == repo:
            return m.get("commit") or m.get("revision") or "main"
    return "main"


F5_MODEL = os.environ.get("F5_MODEL", "F5TTS_v1_Base")
F5_REPO = os.environ.get("F5_REPO", "SWivid/F5-TTS")
F5_REVISION = pinned_revision(F5_REPO, "F5_REVISION")
F5_CKPT = os.environ.get("F5_CKPT", F5_MODEL + "/model_1250000.safetensors")
F5_VOCAB = os.environ.get("F5_VOCAB", F5_MODEL + "/vocab.txt")
VOCODER_REPO = os.environ.get("VOCOS_REPO", "charactr/vocos-mel-24khz")
VOCODER_REVISION = pinned_revision(VOCODER_REPO, "VOCOS_REVISION")
WHISPER_BATCH = int(os.environ.get("WHISPER_BATCH", "8"))


def log(msg):
    print("runpod_handler: " + msg, flush=True)


def notify(message):
    """One datagram to volboot's NOTIFY_SOCKET ('@' = abstract namespace)."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode("utf-8"), addr)
    except OSError as e:
        log("cannot notify %s: %s" % (os.environ["NOTIFY_SOCKET"], e))


def model_failures():
    """{repo: reason} for the models volboot could not fetch this boot."""
    return {m.get("repo"): m.get("reason", "") for m in volboot_models() if not m.get("ok")}


def whisper_model():
    """What whisperx.load_model gets: $WHISPER_MODEL when set (a size such
    as "large-v3", or a directory); else the snapshot directory of the
    manifest's faster-whisper model (Systran/faster-whisper-small in
    manifests/f5-tts.toml), which faster-whisper loads as a local model.
    Its own lookup of a size name asks the hub cache for refs/main, which a
    pinned commit does not leave."""
    if os.environ.get("WHISPER_MODEL"):
        return os.environ["WHISPER_MODEL"]
    for m in volboot_models():
        repo = m.get("repo") or ""
        if repo.split("/")[-1].startswith("faster-whisper-"):
            return os.path.dirname(cached(repo, "model.bin", pinned_revision(repo, "WHISPER_REVISION")))
    return "small"


def cached(repo, filename, revision="main"):
    """Path of a file volboot put in the hub cache, or an error saying so."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id=repo, filename=filename, revision=revision, local_files_only=True)
    except Exception as e:  # LocalEntryNotFoundError and friends
        why = model_failures().get(repo)
        if why is not None:
            # In the manifest, but volboot could not fetch it: the hub was
            # unreachable (or refused) when this worker synced.
            raise RuntimeError(
                "%s/%s@%s is not on the volume: volboot could not fetch it from the Hugging Face hub (%s). "
                "Running offline; the next boot fetches it again once the hub is reachable"
                % (repo, filename, revision, why)
            ) from e
        raise RuntimeError(
            "%s/%s@%s is not on the volume (%s); add it to the manifest and run `volboot sync`"
            % (repo, filename, revision, e)
        ) from e


def load_tts():
    """Warm-load F5-TTS on the GPU; returns the F5TTS object."""
    import torch
    from f5_tts.api import F5TTS

    # The files first: a worker missing its models says so on any machine.
    ckpt = cached(F5_REPO, F5_CKPT, F5_REVISION)
    vocab = cached(F5_REPO, F5_VOCAB, F5_REVISION)
    vocoder_dir = os.path.dirname(cached(VOCODER_REPO, "config.yaml", VOCODER_REVISION))
    cached(VOCODER_REPO, "pytorch_model.bin", VOCODER_REVISION)
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible; F5-TTS needs the GPU this worker was scheduled on")
    t0 = time.monotonic()
    tts = F5TTS(model=F5_MODEL, ckpt_file=ckpt, vocab_file=vocab, vocoder_local_path=vocoder_dir, device="cuda")
    if USE_FLASH_ATTN:
        enable_flash_attn(tts)
    torch.cuda.synchronize()
    log(
        "F5-TTS %s loaded in %.1fs, %.2f GB on GPU, attention=%s"
        % (F5_MODEL, time.monotonic() - t0, torch.cuda.memory_allocated() / 1e9, "flash-attn" if USE_FLASH_ATTN else "torch sdpa")
    )
    return tts


def enable_flash_attn(tts):
    """Point F5-TTS's attention processors at flash-attn.

    F5-TTS (1.1+) picks its attention kernel per processor from the model
    config's attn_backend ("torch" | "flash_attn") and reads it at every
    call, so switching the attribute after loading is enough. Only done when
    volboot installed the flash-attn group, which it does only on GPUs that
    can run it.
    """
    import flash_attn  # noqa: F401  (fails loudly if the group lied)

    switched = 0
    for module in tts.ema_model.modules():
        proc = getattr(module, "processor", None)
        if proc is not None and hasattr(proc, "attn_backend"):
            proc.attn_backend = "flash_attn"
            switched += 1
    log("flash-attn %s enabled on %d attention layers" % (flash_attn.__version__, switched))


class ASR:
    """whisperx, loaded for one request at a time and freed right after.

    A lock serializes use: two concurrent loads would need twice the
    temporary GPU memory the budget allows.
    """

    def __init__(self):
        self.lock = threading.Lock()

    def transcribe(self, audio_path, language=None):
        if not HAVE_ASR:
            raise RuntimeError("transcription needs the optional group 'asr', which is not installed on this worker (%s)" % (DEGRADED or "not in the manifest"))
        import torch
        import whisperx

        with self.lock:
            model = None
            try:
                t0 = time.monotonic()
                name = whisper_model()
                model = whisperx.load_model(
                    name,
                    "cuda",
                    compute_type="float16",
                    language=language,
                    download_root=os.environ.get("WHISPER_DOWNLOAD_ROOT") or None,
                )
                audio = whisperx.load_audio(audio_path)
                result = model.transcribe(audio, batch_size=WHISPER_BATCH)
                text = " ".join(seg["text"].strip() for seg in result.get("segments", []))
                log("whisperx %s transcribed %s in %.1fs" % (name, os.path.basename(audio_path), time.monotonic() - t0))
                return text, result.get("language")
            finally:
                # Give the 2-4 GB back before the next TTS request needs it.
                del model
                gc.collect()
                torch.cuda.empty_cache()


def write_ref_audio(inp, tmpdir):
    if inp.get("ref_audio_b64"):
        path = os.path.join(tmpdir, "ref_audio")
        with open(path, "wb") as f:
            f.write(base64.b64decode(inp["ref_audio_b64"], validate=True))
        return path
    if inp.get("ref_audio_path"):
        path = inp["ref_audio_path"]
        if not os.path.isfile(path):
            raise ValueError("ref_audio_path %r: no such file" % path)
        return path
    raise ValueError("give the reference voice as ref_audio_b64 or ref_audio_path")


def make_handler(tts, asr):
    def handler(job):
        inp = job.get("input") or {}
        task = inp.get("task", "tts")
        with tempfile.TemporaryDirectory(prefix="f5-") as tmpdir:
            try:
                ref_audio = write_ref_audio(inp, tmpdir)
            except (ValueError, TypeError) as e:
                return {"error": str(e)}
            if task == "transcribe":
                text, language = asr.transcribe(ref_audio, inp.get("language"))
                return {"text": text, "language": language}
            if task != "tts":
                return {"error": "task %r: want 'tts' or 'transcribe'" % task}
            gen_text = inp.get("gen_text", "")
            if not gen_text.strip():
                return {"error": "gen_text is required"}
            ref_text = inp.get("ref_text", "")
            if not ref_text.strip() and HAVE_ASR:
                # whisperx is faster and lighter than F5-TTS's fallback
                # (a transformers whisper pipeline that stays resident).
                ref_text, _ = asr.transcribe(ref_audio, inp.get("language"))
            out_path = os.path.join(tmpdir, "out.wav")
            wav, sr, _ = tts.infer(
                ref_file=ref_audio,
                ref_text=ref_text,
                gen_text=gen_text,
                speed=float(inp.get("speed", 1.0)),
                nfe_step=int(inp.get("nfe_step", 32)),
                seed=inp.get("seed"),
                file_wave=out_path,
                show_info=lambda *_: None,
            )
            with open(out_path, "rb") as f:
                audio = base64.b64encode(f.read()).decode("ascii")
            return {
                "audio_b64": audio,
                "sample_rate": sr,
                "seed": tts.seed,
                "ref_text": ref_text,
                "groups": sorted(GROUPS),
            }

    return handler


def main():
    caps = capabilities(lambda e: log("cannot read VOLBOOT_CAPABILITIES: %s" % e))
    log("groups=%s degraded=%s generation=%s" % (",".join(sorted(GROUPS)) or "-", DEGRADED or "-", caps.get("generation", "-")))

    notify("STATUS=loading F5-TTS")
    try:
        tts = load_tts()
    except Exception as e:
        log("warm load failed: %s" % e)
        notify("STATUS=warm load failed: %s" % e)
        return 1

    import runpod

    notify("READY=1\nSTATUS=serving")
    runpod.serverless.start({"handler": make_handler(tts, ASR())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
