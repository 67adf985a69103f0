"""Soak of ``bin/splatsketch-batch``: many small assets on a local Ray instance while processes die.

Generates ASSETS small meshes (boxes, prisms, pyramids, bipyramids of different proportions, as .obj
and .ply) in a temporary folder, then runs the batch with the smallest settings while a Ray worker or
a Blender process is killed (SIGKILL) at random every ~KILL_EVERY seconds, and the driver itself is
killed (SIGKILL) in each of the first DRIVER_KILLS runs; then reruns until a run exits 0. It prints
the figures: runs and their exit codes, kills, index lines, every asset recorded ok exactly once with
no later line contradicting it, leftovers (staging, temporary files, job folders, processes), and
what the batch's processes listened on (``ss -ltnp``) during the first run.

    .venv/bin/python bench/batch_soak.py [--assets 60] [--cpus 2] [--kill-every 20]

Exit 0 when every check holds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
BATCH = os.path.join(REPO, "bin", "splatsketch-batch")
TINY = ["--no-clip", "--curves", "3", "--iterations", "4", "--views", "3", "--heldout-views", "1",
        "--image-size", "48", "--views-per-step", "2", "--seed", "3"]
LOOPBACK = ("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")


def prism(sides: int, radius: float, height: float, apex: bool, twist: float):
    """A prism (or, with ``apex``, a pyramid) over a regular polygon: vertices and faces."""
    ring = [(radius * math.cos(2 * math.pi * i / sides + twist), radius * math.sin(2 * math.pi * i / sides), 0.0)
            for i in range(sides)]
    if apex:
        verts = ring + [(0.0, 0.0, height)]
        faces = [tuple(reversed(range(sides)))] + [(i, (i + 1) % sides, sides) for i in range(sides)]
    else:
        verts = ring + [(x, y, height) for x, y, _ in ring]
        faces = [tuple(reversed(range(sides))), tuple(range(sides, 2 * sides))]
        faces += [(i, (i + 1) % sides, sides + (i + 1) % sides, sides + i) for i in range(sides)]
    return verts, faces


def write_mesh(path: str, verts, faces) -> None:
    with open(path, "w") as f:
        if path.endswith(".ply"):
            f.write(f"ply\nformat ascii 1.0\nelement vertex {len(verts)}\nproperty float x\nproperty float y\n"
                    f"property float z\nelement face {len(faces)}\n"
                    "property list uchar int vertex_indices\nend_header\n")
            f.writelines(f"{x:.5f} {y:.5f} {z:.5f}\n" for x, y, z in verts)
            f.writelines(f"{len(face)} " + " ".join(map(str, face)) + "\n" for face in faces)
        else:
            f.writelines(f"v {x:.5f} {y:.5f} {z:.5f}\n" for x, y, z in verts)
            f.writelines("f " + " ".join(str(i + 1) for i in face) + "\n" for face in faces)


def make_library(folder: str, count: int, rng: random.Random) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        sides, apex = rng.choice([3, 4, 5, 6, 8]), rng.random() < 0.4
        mesh = prism(sides, rng.uniform(0.5, 2.0), rng.uniform(0.3, 3.0), apex, rng.uniform(0, 1))
        path = os.path.join(folder, f"shape{i:02d}_{sides}{'p' if apex else 'x'}{'.ply' if i % 4 == 3 else '.obj'}")
        write_mesh(path, *mesh)
        paths.append(path)
    return paths


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    done = subprocess.run(["ps", "-eo", "pid=,ppid=,args=", "-ww"], capture_output=True, text=True)
    table = {}
    for line in done.stdout.splitlines():
        pid, ppid, *args = line.split(None, 2)
        table[int(pid)] = (int(ppid), args[0] if args else "")
    return table


def descendants(pid: int, table) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _) in table.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


class Killer(threading.Thread):
    """Every ~``every`` seconds, SIGKILL one Ray worker or Blender process of the batch; the driver once
    ``driver_after`` seconds into the run when that is set."""

    def __init__(self, top: subprocess.Popen, every: float, driver_after: float | None, rng: random.Random,
                 library: str):
        super().__init__(daemon=True)
        self.top, self.every, self.driver_after, self.rng, self.library = top, every, driver_after, rng, library
        self.kills = {"worker": 0, "blender": 0, "driver": 0}
        self.listening: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        started, next_kill = time.monotonic(), time.monotonic() + self.rng.uniform(0.5, 1.5) * self.every
        while not self.stop.wait(0.5) and self.top.poll() is None:
            table = process_table()
            tree = descendants(self.top.pid, table)
            if not self.listening and any("bin/splatsketch --input" in table[p][1] for p in tree if p in table):
                self.listening = self._listening(tree)
            if self.driver_after is not None and time.monotonic() - started > self.driver_after:
                driver = [p for p in tree if table[p][0] == self.top.pid and "splatsketch-batch" in table[p][1]]
                if driver and self._kill(driver[0]):
                    self.kills["driver"] += 1
                    self.driver_after = None
                continue
            if time.monotonic() < next_kill:
                continue
            workers = [p for p in tree if table[p][1].startswith("ray::run_asset")]
            blenders = [p for p in tree if "bin/splatsketch --input" in table[p][1]]
            kind, pool = self.rng.choice([("worker", workers), ("blender", blenders)])
            if pool and self._kill(self.rng.choice(pool)):
                self.kills[kind] += 1
                next_kill = time.monotonic() + self.rng.uniform(0.75, 1.25) * self.every

    def _kill(self, pid: int) -> bool:
        try:
            os.kill(pid, signal.SIGKILL)
            return True
        except ProcessLookupError:
            return False

    def _listening(self, tree: set[int]) -> list[str]:
        done = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True)
        return [" ".join(line.split()) for line in done.stdout.splitlines()
                if any(f"pid={pid}," in line for pid in tree | {self.top.pid})]


def check_index(out: str, wanted: int) -> dict:
    """Every asset ok exactly once, with no line after its ok line (for the same asset)."""
    lines = [json.loads(line) for line in open(os.path.join(out, "index.jsonl")) if line.strip()]
    by_asset: dict[str, list[str]] = {}
    for line in lines:
        by_asset.setdefault(line["asset"], []).append(line["status"])
    ok_once = [a for a, statuses in by_asset.items() if statuses.count("ok") == 1 and statuses[-1] == "ok"]
    bad = {a: s for a, s in by_asset.items() if a not in ok_once}
    return {"lines": len(lines), "assets_in_index": len(by_asset), "ok_exactly_once_and_last": len(ok_once),
            "assets_wanted": wanted, "contradicted_or_missing": bad,
            "statuses_before_ok": sorted({s for statuses in by_asset.values() for s in statuses[:-1]}),
            "retried_assets": sum(1 for line in lines if line["status"] == "ok" and (line.get("attempts") or 1) > 1)}


def leftovers(root: str, out: str, home: str, tmp: str) -> dict:
    staging = os.path.join(out, ".staging")
    temp_files = [os.path.join(r, n) for r, ds, fs in os.walk(out) for n in ds + fs if ".tmp-" in n]
    jobs = [os.path.join(r, d) for r, ds, _ in os.walk(home) if os.path.basename(r) == "jobs" for d in ds]
    table = process_table()
    ours = []
    for pid, (_, args) in table.items():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if f"HOME={home}".encode() in environ.split(b"\0") or root in args:
            ours.append(f"{pid} {args[:100]}")
    return {"staging": os.path.exists(staging) and os.listdir(staging), "temp_files": temp_files,
            "job_folders": jobs, "tmpdir_entries": sorted(os.listdir(tmp)), "processes": ours}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assets", type=int, default=60)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--kill-every", type=float, default=20.0)
    p.add_argument("--driver-kills", type=int, default=2)
    p.add_argument("--driver-after", type=float, default=60.0, help="seconds into a run before its driver is killed")
    p.add_argument("--max-runs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args()
    rng = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="ssk-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    home, tmp, out = (os.path.join(root, n) for n in ("home", "tmp", "out"))
    os.makedirs(home)
    os.makedirs(tmp)
    library = os.path.join(root, "lib")
    make_library(library, args.assets, rng)
    env = {**os.environ, "HOME": home, "BLENDER_USER_RESOURCES": os.path.join(home, "blender"), "TMPDIR": tmp,
           "RAY_TMPDIR": os.path.join(root, "r"), "PYTHONUNBUFFERED": "1"}
    os.makedirs(env["RAY_TMPDIR"])
    started, runs, kills, listening = time.monotonic(), [], {"worker": 0, "blender": 0, "driver": 0}, []
    for number in range(args.max_runs):
        log = open(os.path.join(root, f"run{number + 1}.log"), "w")
        top = subprocess.Popen([PYTHON, BATCH, library, "--out", out, "--cpus", str(args.cpus), *TINY],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        killer = Killer(top, args.kill_every, args.driver_after if number < args.driver_kills else None, rng, library)
        killer.start()
        run_started = time.monotonic()
        code = top.wait()
        killer.stop.set()
        killer.join()
        log.close()
        listening = listening or killer.listening
        for kind, n in killer.kills.items():
            kills[kind] += n
        tail = open(log.name).read().strip().splitlines()
        runs.append({"run": number + 1, "exit": code, "seconds": round(time.monotonic() - run_started),
                     "kills": killer.kills, "last_line": tail[-1][:160] if tail else ""})
        print(f"run {number + 1}: exit {code} after {runs[-1]['seconds']} s, kills {killer.kills}: "
              f"{runs[-1]['last_line']}", flush=True)
        if code == 0:
            break
    time.sleep(2.0)
    figures = {"assets": args.assets, "runs": runs, "kills": kills, "wall_s": round(time.monotonic() - started),
               "index": check_index(out, args.assets), "leftovers": leftovers(root, out, home, tmp),
               "listening_during_first_run": listening,
               "listening_beyond_loopback": [line for line in listening if not line.split()[3].startswith(LOOPBACK)]}
    print(json.dumps(figures, indent=2))
    ok = (runs[-1]["exit"] == 0 and kills["driver"] == args.driver_kills
          and figures["index"]["ok_exactly_once_and_last"] == args.assets
          and figures["index"]["assets_in_index"] == args.assets
          and not any(figures["leftovers"].values()) and listening and not figures["listening_beyond_loopback"])
    print(f"soak: {'PASS' if ok else 'FAIL'}: {args.assets} assets, {len(runs)} runs, kills {kills}, "
          f"{figures['wall_s']} s", flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"kept {root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
