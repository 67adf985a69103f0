"""``python -m backend clip-weights``: are the CLIP weights here, and (``--fetch``) get them.

The worker itself never downloads unless a job allows it; this command is what the add-on's
**Get CLIP Weights** button runs, only after the user pressed it and only when Blender's online
access is on. Downloads go to the cache the worker reads (``--cache-dir``, else open_clip's and
Hugging Face's defaults), through open_clip's own downloader: the Hugging Face hub resumes an
interrupted download (``.incomplete`` blobs); a plain URL download that fails is removed, so no
half file is ever taken for weights. Progress events carry the megabytes received so far.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from contract import protocol
from contract.clip_weights import approx_size_mb


def status(model: str, pretrained: str, checkpoint: str = "", cache_dir: str = "") -> dict:
    """``{"present", "path", "expected", "model", "pretrained", "size_mb"}`` without the network."""
    info = {"model": model, "pretrained": pretrained, "size_mb": approx_size_mb(model), "path": "", "expected": []}
    if checkpoint:
        info.update(present=os.path.isfile(checkpoint), path=checkpoint)
        return info
    import open_clip

    from .losses.clip_model import _cached_weights

    if not open_clip.get_pretrained_cfg(model, pretrained):
        info.update(present=False, error=f"unknown CLIP weights tag {pretrained!r} for model {model}")
        return info
    found, expected = _cached_weights(open_clip, model, pretrained, cache_dir)
    info.update(present=found is not None, path=found or "", expected=expected)
    return info


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def fetch(model: str, pretrained: str, cache_dir: str, emit, stop) -> dict:
    """Download the weights into the cache with open_clip's downloader; progress every second."""
    import open_clip
    from open_clip import pretrained as registry

    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        raise ValueError(f"unknown CLIP weights tag {pretrained!r} for model {model}")
    watch = Path(cache_dir) if cache_dir else Path(os.path.expanduser("~/.cache"))
    before = _folder_bytes(watch) if watch.exists() else 0
    size = approx_size_mb(model)
    result: dict = {}

    def work():
        try:
            result["path"] = registry.download_pretrained(cfg, cache_dir=cache_dir or None)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            result["error"] = error

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(1.0)
        if stop():
            raise KeyboardInterrupt
        got = max(0, (_folder_bytes(watch) if watch.exists() else 0) - before) / (1 << 20)
        emit({"type": protocol.PROGRESS, "iteration": int(min(got, size or got)), "iterations": int(size or got or 1),
              "stage": "Downloading CLIP weights", "package": f"{model}/{pretrained}", "megabytes": round(got, 1)})
    if "error" in result:
        raise result["error"]
    if not result.get("path") or not os.path.isfile(result["path"]):
        raise OSError("the download finished without a weights file")
    return {"path": result["path"], "megabytes": round(os.path.getsize(result["path"]) / (1 << 20), 1)}


def main(args) -> int:
    from .worker import EventStream, StopFlag

    stop = StopFlag(args.parent_pid, watch_stdin=args.watch_stdin)
    events = EventStream(on_closed=stop.set)
    try:
        if not args.fetch:
            info = status(args.model, args.pretrained, args.checkpoint, args.cache_dir)
            events.emit({"type": protocol.DONE, "result": "", **info})
            return protocol.EXIT_OK
        started = time.monotonic()
        got = fetch(args.model, args.pretrained, args.cache_dir, events.emit, stop)
        events.emit({"type": protocol.DONE, "result": got["path"], "present": True, "path": got["path"],
                     "megabytes": got["megabytes"], "seconds": round(time.monotonic() - started, 1)})
        return protocol.EXIT_OK
    except KeyboardInterrupt:
        events.emit({"type": protocol.ERROR, "message": "download cancelled; a partial Hugging Face download "
                     "resumes next time", "code": protocol.EXIT_CANCELLED})
        return protocol.EXIT_CANCELLED
    except Exception as error:  # noqa: BLE001 - network, disk: one line
        message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        events.emit({"type": protocol.ERROR, "message": f"could not get the CLIP weights: {message}",
                     "code": protocol.EXIT_CLIP_WEIGHTS})
        print(f"clip-weights: {type(error).__name__}: {error}", file=sys.stderr)
        return protocol.EXIT_CLIP_WEIGHTS
