"""The driver: parse, plan (what is already done), schedule one Ray task per asset, record, report.

Exit codes: 0 every asset sketched, 1 some asset did not (each with its status and reason in the
index), 2 bad arguments or a command/backend that cannot run (nothing was scheduled), 130 interrupted
(Ctrl-C: running tasks cancelled, their Blender processes stopped, the index holds only finished
assets), 143 terminated (SIGTERM, the same).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import sys
import time

from contract import __version__
from contract.protocol import CLI_ASSET_FAILED, CLI_INTERRUPTED, CLI_OK, CLI_TERMINATED, CLI_USAGE, SETTINGS_LINE

from . import gallery, index, reaper, sources, task
from .progress import Progress, summary_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The batch names these outputs itself, per asset; on the command line they would clash.
OWNED = ("--output", "--preview", "--json", "--job-dir", "--input", "--demo", "--report", "--setup-backend",
         "--check-backend", "--print-settings")


LOOPBACK = "127.0.0.1"


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="splatsketch-batch", allow_abbrev=False,
        usage="splatsketch-batch SOURCES... --out DIR [batch options] [splatsketch options]",
        description="Sketch every asset of a library, one Blender process per asset, on a local Ray instance "
                    "or a Ray cluster. Resumable: a rerun skips assets whose file and settings are unchanged. "
                    "SOURCES: mesh files (.obj .ply .stl .gltf .glb), .blend files, folders (searched "
                    "recursively), globs, or .txt files listing paths. Every option the batch does not know "
                    "goes to the headless command (`blender -b -c splatsketch --help` lists them).",
        epilog="Outputs in DIR: <asset>/sketch.blend, metrics.json, sheet.png; index.jsonl (one line per asset); "
               "index.html (the gallery); logs/<asset>.log for assets that failed. Exit codes: 0 all sketched, "
               "1 some not, 2 nothing could run, 130 interrupted, 143 terminated.")
    p.add_argument("--out", required=True, metavar="DIR", help="where the outputs, index.jsonl and index.html go")
    p.add_argument("--blender", metavar="CMD",
                   help="the Blender to run, e.g. /opt/blender/blender (with the extension installed and its backend "
                        "set up); default: this checkout's bin/splatsketch through the bpy wheel")
    p.add_argument("--address", metavar="ADDR",
                   help="join a Ray cluster ('auto', or ray://HOST:10001); default: start a local Ray instance")
    p.add_argument("--cpus", type=int, metavar="N", help="local instance: cores to use (default: all)")
    p.add_argument("--gpus", type=int, metavar="N", help="local instance: GPUs to use (default: all)")
    p.add_argument("--cpus-per-task", type=int, default=1, metavar="N",
                   help="cores per asset (its torch threads; default 1: one asset per core)")
    p.add_argument("--gpus-per-task", type=float, default=1.0, metavar="F",
                   help="GPUs per asset when the settings use one and the cluster has GPUs (default 1; 0.5 shares)")
    p.add_argument("--jobs", type=int, metavar="N", help="at most N assets at once (default: what the cluster fits)")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="retries of an asset whose Blender process or Ray worker died (default 2)")
    p.add_argument("--timeout", type=float, default=3600, metavar="S",
                   help="seconds one asset may take before it is stopped (status timeout, tried again by "
                        "the next run; default 3600; 0: none)")
    p.add_argument("--force", action="store_true", help="redo assets that are already done")
    p.add_argument("--retry-failed", action="store_true",
                   help="redo assets that failed before (by default a failed asset stays failed until its file or "
                        "the settings change; timeouts and crashes are always retried)")
    sel = p.add_argument_group("for .blend sources: what to sketch in each file (default: its active object)")
    sel.add_argument("--collection", action="append", default=[], metavar="NAME")
    sel.add_argument("--objects", metavar="A,B")
    sel.add_argument("--object", action="append", default=[], metavar="NAME")
    return p


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Sources come first, up to the first option."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            return argv[:i], argv[i:]
    return argv, []


def command_prefix(blender: str | None) -> tuple[list[str], bool]:
    """The argv prefix that runs the headless command, and whether it is a Blender binary (``-b ... -c``)."""
    if blender:
        try:
            return shlex.split(blender), True
        except ValueError as error:
            raise UsageError(f"--blender '{blender}': {error}") from None
    return [sys.executable, os.path.join(REPO, "bin", "splatsketch")], False


def asset_argv(prefix: list[str], is_blender: bool, asset: sources.Asset, passthrough: list[str]) -> list[str]:
    if is_blender:
        head = [*prefix, "-b", *([asset.source] if asset.is_blend else []), "-c", "splatsketch"]
    else:
        head = [*prefix, *([asset.source] if asset.is_blend else [])]
    what = list(asset.selection) if asset.is_blend else ["--input", asset.source]
    return [*head, *what, *passthrough]


def settings_hash(resolved: dict) -> str:
    """What decides the outputs besides the asset's bytes: the resolved settings, whether they are
    evaluated, and the version (not the backend's path, which differs between nodes)."""
    key = {"settings": resolved.get("settings"), "job": resolved.get("job"), "evaluate": resolved.get("evaluate"),
           "version": __version__}
    return "sha256:" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _selection(args) -> tuple[str, ...]:
    sel: list[str] = []
    for name in args.collection:
        sel += ["--collection", name]
    for name in args.object:
        sel += ["--object", name]
    if args.objects:
        sel += ["--objects", args.objects]
    return tuple(sel)


def _private_token(create: bool) -> None:
    """Ray's token (``~/.ray/auth_token``, which Ray writes with the umask's mode) readable by its owner
    alone; for a local instance it is made here first, private from the start, when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser(os.path.join("~", ".ray", "auth_token"))
    try:
        if create and not os.path.exists(path):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        if os.path.exists(path):
            os.chmod(path, 0o600)
    except OSError:  # another process made it meanwhile, or HOME is read-only: Ray says what it needs
        pass


def _start_ray(args):
    _private_token(create=not args.address)
    if args.address:
        token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") \
            or os.path.exists(os.path.expanduser(os.path.join("~", ".ray", "auth_token")))
        if token and "RAY_AUTH_MODE" not in os.environ:
            # A head that has a token requires it, and Ray's driver sends it only in token mode (Ray 2.60;
            # read when ray is imported, so set before). A head without authentication accepts it too.
            os.environ["RAY_AUTH_MODE"] = "token"
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray's local-only mode (its default on macOS and Windows): the node's address is the loopback
        # one, so its servers listen on 127.0.0.1 alone instead of every interface. Read when ray is
        # imported, and inherited by the processes it starts.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UsageError(f"ray is not installed in {sys.executable}: pip install ray") from None
    import logging

    try:
        if args.address:
            ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
        else:
            # Loopback only: a local instance serves this machine, so no Ray port is open to the network.
            ray.init(num_cpus=args.cpus or os.cpu_count(), num_gpus=args.gpus, include_dashboard=False,
                     logging_level=logging.ERROR, log_to_driver=False, object_store_memory=100 * 1024 * 1024,
                     _node_ip_address=LOOPBACK)
    except Exception as error:  # ray's own errors (no cluster at that address, ports taken...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        where = f"--address {args.address}" if args.address else "a local instance"
        raise UsageError(f"cannot start Ray ({where}): {first}") from None
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(task)  # workers need Blender, not this checkout
    return ray


def _outputs(out: str, asset_id: str) -> dict:
    folder = os.path.join(out, asset_id)
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    outputs = {key: f"{asset_id}/{name}" for key, name in (("blend", task.BLEND), ("metrics", task.METRICS))
               if name in names}
    sheets = [n for n in names if n.startswith("sheet") and n.endswith(".png")]  # one per object of a .blend
    if sheets:
        outputs["sheet"] = f"{asset_id}/{task.SHEET if task.SHEET in sheets else sheets[0]}"
    return outputs


def _score(record: dict) -> str:
    scored = index.score(record)
    return f"{scored[0]} {scored[1]:.{3 if scored[0] == 'F' else 4}f}" if scored else ""


class Stopper:
    """Ctrl-C and SIGTERM as one stop request. Inside ``deferred()`` (submitting a task and noting it)
    the request waits, so no task is ever running without the driver knowing to cancel it."""

    def __init__(self):
        self.requested, self._defer = "", False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum, _frame):
        self.requested = self.requested or ("SIGTERM" if signum == signal.SIGTERM else "Ctrl-C")
        if not self._defer:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self):
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
        if self.requested:
            raise KeyboardInterrupt

    @property
    def code(self) -> int:
        return CLI_TERMINATED if self.requested == "SIGTERM" else CLI_INTERRUPTED


def run(argv: list[str], announce: int | None = None) -> int:
    """The batch; ``announce``: a pipe to the reaper, told the output folder once it is held."""
    names, rest = split_argv(argv)
    parser = build_parser()
    try:
        args, passthrough = parser.parse_known_args(rest)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else CLI_USAGE
    stopper = Stopper()
    stopper.install()
    try:
        return _run(args, names, passthrough, stopper, announce)
    except (UsageError, sources.SourceError, index.LockedError) as error:
        print(f"splatsketch-batch: error: {error}", file=sys.stderr, flush=True)
        return CLI_USAGE
    except KeyboardInterrupt:  # before any asset was scheduled, or a second Ctrl-C while stopping
        print(f"splatsketch-batch: {stopper.requested or 'interrupted'}: stopped", file=sys.stderr, flush=True)
        return stopper.code
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)


def _run(args, names: list[str], passthrough: list[str], stopper: Stopper, announce: int | None) -> int:
    if not names:
        raise UsageError("no sources: give mesh files, .blend files, folders, globs or lists of paths first")
    owned = [a for a in passthrough if a.split("=", 1)[0] in OWNED]
    if owned:
        raise UsageError(f"{owned[0]}: the batch writes each asset's outputs itself (in --out); leave it out")
    if args.cpus_per_task < 1 or (args.jobs is not None and args.jobs < 1) or args.retries < 0 \
            or args.timeout < 0 or args.gpus_per_task < 0:
        raise UsageError("--cpus-per-task and --jobs must be >= 1; --retries, --timeout and --gpus-per-task >= 0")
    out = os.path.abspath(os.path.expanduser(args.out))
    selection = _selection(args)
    assets = sources.assets(names, selection, exclude=out)
    if selection and not any(a.is_blend for a in assets):
        raise UsageError("--collection/--objects/--object choose objects inside .blend sources, and there are none")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot make --out '{out}': {error.strerror or error}") from None
    held = index.lock(out)  # noqa: F841 - held until the process ends
    if announce is not None:
        with contextlib.suppress(OSError):
            os.write(announce, out.encode())
            os.close(announce)
    shutil.rmtree(os.path.join(out, task.STAGING), ignore_errors=True)  # a killed run's leftovers

    prefix, is_blender = command_prefix(args.blender)
    env = {"OMP_NUM_THREADS": str(args.cpus_per_task)}
    ray = _start_ray(args)
    stopper.install()  # again: ray.init sets its own SIGTERM handler
    try:
        return _schedule(ray, args, out, assets, prefix, is_blender, passthrough, env, stopper)
    finally:
        ray.shutdown()


def _resolve_settings(ray, prefix, is_blender, passthrough, env) -> dict:
    """One check where the assets will run (options, settings, backend) before anything is queued."""
    argv = [*prefix, *(["-b", "-c", "splatsketch"] if is_blender else []), *passthrough, "--print-settings"]
    check = ray.remote(task.check_command).options(num_cpus=0)
    try:
        code, stdout, stderr = ray.get(check.remote(argv, env, os.getcwd()))
    except ray.exceptions.RayError as error:
        raise UsageError(f"the settings check did not run on Ray: {str(error).strip().splitlines()[-1]}") from None
    if code != 0:
        reason = task.error_line(stderr + stdout) or "no message"
        raise UsageError(f"the headless command refused these settings: {reason}")
    for line in stdout.splitlines():
        if line.startswith(SETTINGS_LINE + " "):
            try:
                resolved = json.loads(line[len(SETTINGS_LINE) + 1:])
            except ValueError:
                break
            if isinstance(resolved, dict) and isinstance(resolved.get("settings"), dict):
                return resolved
    raise UsageError(f"'{shlex.join(argv)}' printed no settings: is the SplatSketch extension there current?")


def _check_fits(ray, cpus: int, gpus: float) -> None:
    """Ray queues a task that fits on no node forever (its warning is not shown): refuse it here."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        most = max((n.get("CPU", 0) for n in nodes), default=0)
        need = f"{cpus} CPUs" + (f" and {gpus:g} GPUs" if gpus else "")
        raise UsageError(f"no Ray node has {need} for one asset (the largest has {most:g} CPUs): "
                         "lower --cpus-per-task / --gpus-per-task")


def _schedule(ray, args, out, assets, prefix, is_blender, passthrough, env, stopper: Stopper) -> int:
    resolved = _resolve_settings(ray, prefix, is_blender, passthrough, env)
    s_hash = settings_hash(resolved)
    resources = ray.cluster_resources()
    cluster_gpus = resources.get("GPU", 0)
    device = resolved["settings"].get("device", "auto")
    if device == "cuda" and not cluster_gpus:
        raise UsageError("--device cuda, but this Ray cluster has no GPU")
    gpus = args.gpus_per_task if device in ("auto", "cuda") and cluster_gpus else 0
    _check_fits(ray, args.cpus_per_task, gpus)
    capacity = max(1, int(resources.get("CPU", 1) // args.cpus_per_task))
    if gpus:
        capacity = min(capacity, max(1, int(cluster_gpus // gpus)))
    window = min(args.jobs or capacity, len(assets))

    latest = index.read(out, repair=True, warn=_warn)  # before the first append: a torn last line goes
    todo, skipped = [], []
    ids = {asset.id for asset in assets}
    for asset in assets:
        c_hash = sources.content_hash(asset.source)
        if not args.force and index.is_done(latest.get(asset.id), c_hash, s_hash, out, args.retry_failed):
            skipped.append(latest[asset.id])
        elif not args.force and _adopt_renamed(out, asset, c_hash, s_hash, latest, ids):
            skipped.append(latest[asset.id])
        else:
            todo.append((asset, c_hash))
    cpus = int(resources.get("CPU", 0))
    where = f"Ray at {args.address} ({cpus} CPUs)" if args.address else f"a local Ray instance ({cpus} CPUs)"
    print(f"splatsketch-batch: {len(assets)} assets: {len(todo)} to sketch, {len(skipped)} already done; "
          f"{window} at a time on {where}" + (f", {gpus:g} GPU each" if gpus else "") + f"; outputs in {out}",
          flush=True)

    remote = ray.remote(task.run_asset).options(num_cpus=args.cpus_per_task, num_gpus=gpus,
                                                max_retries=args.retries, retry_exceptions=[task.BlenderDied])
    progress = Progress(len(todo), window)
    rows: list[dict] = []
    pending, inflight = list(reversed(todo)), {}
    last_page, halt, page_warned = 0.0, "", False
    try:
        while pending or inflight:
            while pending and len(inflight) < window and not halt:
                with stopper.deferred():
                    asset, c_hash = pending.pop()
                    _forget_attempts(out, asset.id)
                    spec = {"id": asset.id, "out": out, "argv": asset_argv(prefix, is_blender, asset, passthrough),
                            "timeout": args.timeout, "env": env, "cwd": os.getcwd()}
                    inflight[remote.remote(spec)] = (asset, c_hash)
            if not inflight:  # halted: nothing runs and nothing more starts
                break
            progress.running = len(inflight)
            progress.bar()
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                with stopper.deferred():
                    asset, c_hash = inflight.pop(ref)
                    record = _finish(ray, ref, asset, c_hash, s_hash, out)
                    halt = _keep(out, record, latest) or halt
                    _forget_attempts(out, asset.id)
                if record.get("no_space"):
                    halt = halt or record["reason"]
                rows.append({**record, "name": os.path.basename(asset.source), "score": _score(record)})
                progress.finished(record["status"] == "ok", float(record.get("seconds") or 0))
                progress.running = len(inflight)
                progress.say(_line(asset, record))
            if time.monotonic() - last_page > 10 and not halt:
                problem = _page(out, latest)
                halt = problem if problem.startswith(NO_SPACE) else halt
                if problem and not halt and not page_warned:
                    _warn(problem)
                    page_warned = True
                last_page = time.monotonic()
    except KeyboardInterrupt:
        progress.close()
        print(f"splatsketch-batch: {stopper.requested or 'interrupted'}: cancelling {len(inflight)} running "
              "asset(s); finished ones stay in the index (Ctrl-C again: stop waiting)", file=sys.stderr, flush=True)
        for ref in inflight:
            ray.cancel(ref)
        _drain(ray, inflight, out, s_hash, latest)
        if not inflight:
            shutil.rmtree(os.path.join(out, task.STAGING), ignore_errors=True)
        _page(out, latest)
        return stopper.code
    progress.close()
    shutil.rmtree(os.path.join(out, task.STAGING), ignore_errors=True)  # what a dead worker left
    if halt:
        print(f"splatsketch-batch: error: {halt}; {len(pending)} asset(s) not started: free some space and "
              "rerun (finished assets are kept)", file=sys.stderr, flush=True)
    problem = "" if halt else _page(out, latest)
    page = os.path.join(out, "index.html") if not problem and not halt else "not rewritten"
    this_run = len(rows)
    rows += [{**r, "name": os.path.basename(r["source"]), "status": r["status"] + " (earlier)", "score": _score(r)}
             for r in skipped]
    print(summary_table(rows), flush=True)
    now_ok = sum(r["status"] == "ok" for r in rows[:this_run])
    earlier_bad = sum(r["status"] != "ok" for r in skipped)
    print(f"splatsketch-batch: this run {now_ok} sketched, {this_run - now_ok} failed"
          + (f"; {len(skipped)} skipped as done before ({earlier_bad} of them failed)" if skipped else "")
          + f"; gallery {page}", flush=True)
    bad = halt or any(not r["status"].startswith("ok") for r in rows)
    return CLI_ASSET_FAILED if bad else CLI_OK


NO_SPACE = "no space left"


def _warn(text: str) -> None:
    print(f"splatsketch-batch: warning: {text}", file=sys.stderr, flush=True)


def _keep(out: str, record: dict, latest: dict) -> str:
    """Append the asset's line and take it as the latest; on a full disk the index stays as it was
    (the asset runs again next time) and the reason is returned."""
    try:
        index.append(out, record)
    except index.WriteError as error:
        return f"{NO_SPACE} to record results: {error}"
    latest[record["asset"]] = record
    return ""


def _page(out: str, latest: dict) -> str:
    """Rewrite the gallery; "" or why it could not be (starting with NO_SPACE when the disk is full)."""
    try:
        gallery.write(out, list(latest.values()))
    except OSError as error:
        if error.errno in task.NO_SPACE_ERRNOS:
            return f"{NO_SPACE} for {os.path.join(out, 'index.html')} ({error.strerror})"
        return f"cannot write {os.path.join(out, 'index.html')}: {error.strerror or error}"
    return ""


def _adopt_renamed(out: str, asset, c_hash: str, s_hash: str, latest: dict, ids: set) -> bool:
    """A source renamed or moved since its sketch was made (same bytes, same selection and settings,
    the old path gone): its output folder is renamed to the new id and the old line retired, so the
    asset is not sketched again and the gallery shows it once, under its new name."""
    for old in list(latest.values()):
        if (old["status"] != "ok" or old["asset"] in ids or old.get("content_hash") != c_hash
                or old.get("settings_hash") != s_hash or tuple(old.get("selection", ())) != asset.selection
                or not old.get("source") or os.path.exists(old["source"])
                or not index.is_done(old, c_hash, s_hash, out)):
            continue
        prefix = old["asset"] + "/"
        outputs = {k: asset.id + "/" + v[len(prefix):] if v.startswith(prefix) else v
                   for k, v in old.get("outputs", {}).items()}
        moved = {**old, "asset": asset.id, "source": asset.source, "outputs": outputs, "renamed_from": old["source"],
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        gone = {"asset": old["asset"], "status": index.RENAMED, "source": old["source"], "renamed_to": asset.id,
                "finished": moved["finished"]}
        try:  # the new line first: if the rename never happens its outputs are missing and it is redone
            index.append(out, moved)
            task.place(os.path.join(out, old["asset"]), os.path.join(out, asset.id))
            index.append(out, gone)
        except (OSError, index.WriteError):
            return False
        latest[asset.id], latest[old["asset"]] = moved, gone
        print(f"splatsketch-batch: {asset.source}: the same file as {old['source']} (renamed): its sketch moved, "
              "not redone", flush=True)
        return True
    return False


def _line(asset, record: dict) -> str:
    tries = f" after {record['attempts']} tries" if (record.get("attempts") or 1) > 1 else ""
    detail = f": {record['reason']}" if record.get("reason") else (f" ({_score(record)})" if _score(record) else "")
    return f"[{os.path.basename(asset.source)}] {record['status']}{tries} in {record.get('seconds') or 0:.0f} s{detail}"


def _drain(ray, inflight: dict, out: str, s_hash: str, latest: dict, grace: float = 60.0) -> None:
    """Wait for the cancelled tasks to stop their Blender processes; record the ones that had finished."""
    deadline = time.monotonic() + grace
    while inflight and time.monotonic() < deadline:
        try:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
        except KeyboardInterrupt:
            print("splatsketch-batch: not waiting any longer", file=sys.stderr, flush=True)
            return
        for ref in ready:
            asset, c_hash = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception:  # cancelled (or died while stopping): nothing to record
                continue
            if result.get("status") in index.STATUSES:
                _keep(out, _record(asset, c_hash, s_hash, out, result), latest)
            _forget_attempts(out, asset.id)


def _forget_attempts(out: str, asset_id: str) -> None:
    marker = task.attempts_marker(out, asset_id)
    if os.path.exists(marker):
        os.remove(marker)


def _record(asset, c_hash: str, s_hash: str, out: str, result: dict) -> dict:
    record = {"asset": asset.id, "source": asset.source, "selection": list(asset.selection),
              "content_hash": c_hash, "settings_hash": s_hash, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              **result}
    first = (record.get("assets") or [{}])[0]
    record["metrics"] = {**(first.get("metrics") or {}), **(first.get("evaluation") or {})}
    if record["status"] in ("ok", "partial"):
        record["outputs"] = _outputs(out, asset.id)
    if record["status"] != "ok" and os.path.exists(os.path.join(out, task.LOGS, f"{asset.id}.log")):
        record["log"] = f"{task.LOGS}/{asset.id}.log"
    return record


def _finish(ray, ref, asset, c_hash: str, s_hash: str, out: str) -> dict:
    try:
        result = ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # the task raised after its last retry
        cause = getattr(error, "cause", None)
        result = {"status": "crashed", "reason": str(cause) if cause else str(error).splitlines()[0]}
    except ray.exceptions.RayError as error:  # its worker or node died after the last retry
        result = {"status": "crashed", "reason": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    marker = task.attempts_marker(out, asset.id)
    if "attempts" not in result and os.path.exists(marker):
        result["attempts"] = os.path.getsize(marker)
    return _record(asset, c_hash, s_hash, out, result)


def main() -> int:
    code = reaper.supervise(lambda announce: run(sys.argv[1:], announce))
    sys.stdout.flush()
    sys.stderr.flush()
    return code
