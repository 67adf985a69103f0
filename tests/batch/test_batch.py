"""bin/splatsketch-batch on a real local Ray instance (2 CPUs) with real Blender processes (bpy wheel).

One batch over four tiny meshes and a broken one: while it runs, one asset's Blender process is
killed with SIGKILL, and the batch must retry it and finish; the broken mesh is reported with its
reason and the rest finish (exit 1). A rerun schedules nothing; the sketches equal single CLI runs;
Ctrl-C stops cleanly. The first module runs without Ray where it can (sources, index).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from batch import index, sources

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = os.path.join(REPO, ".venv", "bin", "python")
BATCH = os.path.join(REPO, "bin", "splatsketch-batch")
TINY = ["--no-clip", "--curves", "3", "--iterations", "4", "--views", "3", "--heldout-views", "1",
        "--image-size", "48", "--views-per-step", "2", "--seed", "3"]

CUBE = ([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)],
        [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
MESHES = {
    "cube": CUBE,
    "tetra": ([(1, 1, 1), (-1, -1, 1), (-1, 1, -1), (1, -1, -1)], [(0, 1, 2), (0, 3, 1), (0, 2, 3), (1, 3, 2)]),
    "octa": ([(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)],
             [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]),
    "prism": ([(0, 0, 0), (2, 0, 0), (1, 1.5, 0), (0, 0, 3), (2, 0, 3), (1, 1.5, 3)],
              [(0, 2, 1), (3, 4, 5), (0, 1, 4, 3), (1, 2, 5, 4), (2, 0, 3, 5)]),
}
DUMP = """
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[-1])
out = {}
for obj in bpy.data.objects:
    if obj.type == "CURVE":
        out[obj.name] = [[tuple(p.co) + tuple(p.handle_left) + tuple(p.handle_right) for p in s.bezier_points]
                         for s in obj.data.splines]
print("DUMP" + json.dumps(out))
"""


def write_obj(path, verts, faces):
    with open(path, "w") as f:
        f.writelines(f"v {x} {y} {z}\n" for x, y, z in verts)
        f.writelines("f " + " ".join(str(i + 1) for i in face) + "\n" for face in faces)


@pytest.fixture(scope="module")
def env():
    home = tempfile.mkdtemp(prefix="ss-batch-home-")
    ray_tmp = tempfile.mkdtemp(prefix="ssr-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    yield {**os.environ, "HOME": home, "BLENDER_USER_RESOURCES": os.path.join(home, "blender"),
           "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    subprocess.run(["rm", "-rf", home, ray_tmp])


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    for name, (verts, faces) in MESHES.items():
        write_obj(folder / f"{name}.obj", verts, faces)
    (folder / "broken.obj").write_text("this is not a mesh\nv 1 2\nf 9 9 9\n")
    return folder


def batch(env, *args, timeout=600):
    return subprocess.run([PYTHON, BATCH, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def processes_with(text: str) -> list[int]:
    done = subprocess.run(["ps", "-eo", "pid=,args=", "-ww"], capture_output=True, text=True)
    return [int(line.split(None, 1)[0]) for line in done.stdout.splitlines()
            if text in line and "bin/splatsketch " in line and "--print-settings" not in line]


def dump_curves(env, blend) -> dict:
    done = subprocess.run([PYTHON, "-c", DUMP, str(blend)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.split("DUMP", 1)[1].splitlines()[0])


def kill_once(proc, pattern: str, parent: bool, deadline: float):
    """SIGKILL the Blender process whose arguments hold ``pattern`` (or, with ``parent``, the Ray worker
    that started it) two seconds after it appears. Returns the pid killed, or None."""
    while proc.poll() is None and time.monotonic() < deadline:
        pids = processes_with(pattern)
        if pids:
            time.sleep(2.0)  # Blender is up and the job is under way
            victim = pids[0]
            if parent:
                ps = subprocess.run(["ps", "-o", "ppid=", "-p", str(victim)], capture_output=True, text=True)
                victim = int(ps.stdout.strip() or 0)
            try:
                os.kill(victim, signal.SIGKILL)
                return victim
            except (ProcessLookupError, ValueError):
                return None
        time.sleep(0.2)
    return None


@pytest.fixture(scope="module")
def first_run(env, library, tmp_path_factory):
    """The batch, with the cube's Blender process and then the octahedron's Ray worker killed mid-task."""
    out = tmp_path_factory.mktemp("out")
    proc = subprocess.Popen([PYTHON, BATCH, library, "--out", out, "--cpus", "2", *TINY], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 300
    killed = kill_once(proc, f"--input {library / 'cube.obj'} ", False, deadline)
    worker = kill_once(proc, f"--input {library / 'octa.obj'} ", True, deadline)
    stdout, stderr = proc.communicate(timeout=600)
    return {"out": out, "code": proc.returncode, "stdout": stdout, "stderr": stderr, "killed": killed,
            "worker": worker}


def test_every_asset_finishes_one_killed_is_retried_the_broken_one_is_reported(first_run, library):
    run = first_run
    assert run["killed"], "the cube's Blender process was never seen running"
    assert run["worker"], "the octahedron's Ray worker was never seen running"
    assert run["code"] == 1, run["stdout"] + run["stderr"]
    latest = index.read(str(run["out"]))
    by_name = {os.path.basename(r["source"]): r for r in latest.values()}
    assert sorted(by_name) == ["broken.obj", "cube.obj", "octa.obj", "prism.obj", "tetra.obj"]
    for name in MESHES:
        record = by_name[f"{name}.obj"]
        assert record["status"] == "ok", record
        for rel in ("blend", "metrics", "sheet"):
            assert os.path.isfile(run["out"] / record["outputs"][rel]), (name, rel)
        assert record["content_hash"] == sources.content_hash(str(library / f"{name}.obj"))
    assert by_name["cube.obj"]["attempts"] == 2, by_name["cube.obj"]  # Blender died: retried
    assert by_name["octa.obj"]["attempts"] == 2, by_name["octa.obj"]  # its Ray worker died: retried
    assert run["stderr"].count("after 2 tries") == 2
    broken = by_name["broken.obj"]
    assert broken["status"] == "failed" and "no faces" in broken["reason"], broken
    assert os.path.isfile(run["out"] / broken["log"])
    assert not list(run["out"].glob("broken-*/sketch.blend"))
    assert not os.listdir(run["out"] / ".staging") if (run["out"] / ".staging").exists() else True
    assert "this run 4 sketched, 1 failed" in run["stdout"]
    page = (run["out"] / "index.html").read_text()
    assert all(f"{name}.obj" in page for name in [*MESHES, "broken"])
    assert not processes_with(str(library)), "a Blender process outlived the batch"


def test_a_rerun_schedules_nothing(first_run, env, library):
    lines = (first_run["out"] / index.INDEX).read_text().splitlines()
    again = batch(env, library, "--out", first_run["out"], "--cpus", "2", *TINY)
    assert again.returncode == 1, again.stdout + again.stderr  # the broken mesh is still broken
    assert "5 assets: 0 to sketch, 5 already done" in again.stdout
    assert "this run 0 sketched, 0 failed; 5 skipped as done before (1 of them failed)" in again.stdout
    assert (first_run["out"] / index.INDEX).read_text().splitlines() == lines


def test_the_sketches_equal_single_cli_runs(first_run, env, library, tmp_path):
    latest = {os.path.basename(r["source"]): r for r in index.read(str(first_run["out"])).values()}
    for name in ("cube",):  # the cube is the one whose Blender was killed and retried
        single = tmp_path / f"{name}.blend"
        done = subprocess.run([PYTHON, os.path.join(REPO, "bin", "splatsketch"), "--input", library / f"{name}.obj",
                               *TINY, "--output", single], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        from_batch = dump_curves(env, first_run["out"] / latest[f"{name}.obj"]["outputs"]["blend"])
        assert from_batch and from_batch == dump_curves(env, single), name


def test_ctrl_c_cancels_running_assets_and_leaves_a_consistent_index(env, library, tmp_path):
    out = tmp_path / "out"
    long = [*TINY, "--iterations", "100000"]  # would run for hours: only a real cancel ends it in time
    proc = subprocess.Popen([PYTHON, BATCH, library / "cube.obj", library / "tetra.obj", "--out", out, "--cpus", "2",
                             *long], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 300
    while len(processes_with(f"{out}/.staging")) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stdout + stderr
    assert time.monotonic() - stopped < 60, "the running assets were not cancelled"
    assert "Ctrl-C: cancelling 2 running asset(s)" in stderr
    assert not processes_with(str(out)), "a Blender process outlived the cancelled batch"
    assert not (out / ".staging").exists() or not os.listdir(out / ".staging")
    assert not index.read(str(out)), "a cancelled asset has an index line"
    assert not [p for p in out.iterdir() if p.name.startswith(("cube-", "tetra-"))], "an output folder appeared"


@pytest.mark.parametrize("args, message", [
    ([], "no sources"),
    (["{lib}/cube.obj", "--output", "x.blend"], "--output: the batch writes"),
    (["{lib}/nothing_here.obj"], "does not exist"),
    (["{lib}/cube.obj", "--collection", "Props"], "inside .blend sources"),
])
def test_bad_arguments_exit_2_before_ray_starts(env, library, tmp_path, args, message):
    done = batch(env, *[a.format(lib=library) for a in args], "--out", tmp_path / "out", *TINY, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_settings_hash_covers_what_changes_the_outputs():
    from batch.main import settings_hash

    base = {"settings": {"curves": 16}, "job": {"size": 224}, "evaluate": False, "python": "/a/python"}
    assert settings_hash(base) == settings_hash({**base, "python": "/another/node/python"})
    for changed in ({"settings": {"curves": 8}}, {"job": {"size": 128}}, {"evaluate": True}):
        assert settings_hash({**base, **changed}) != settings_hash(base), changed


def test_sources_expand_folders_globs_and_lists(library, tmp_path):
    (tmp_path / "sub").mkdir()
    write_obj(tmp_path / "sub" / "b.obj", *CUBE)
    (tmp_path / "list.txt").write_text(f"# the library\n{library}/cube.obj\nsub\n{library}/t*.obj  # tetra\n")
    assert sources.expand([str(tmp_path / "list.txt")]) == [
        str(library / "cube.obj"), str(tmp_path / "sub" / "b.obj"), str(library / "tetra.obj")]
    assert len(sources.expand([str(library), str(library / "cube.obj")])) == 5  # no repeats
    for bad in ("missing.obj", "*.fbx"):
        with pytest.raises(sources.SourceError):
            sources.expand([str(tmp_path / bad)])
    ids = {a.id for a in sources.assets([str(library)])}
    assert len(ids) == 5 and all(i.split("-")[0] in [*MESHES, "broken"] for i in ids)
    (tmp_path / "sub" / "out" / "b-1").mkdir(parents=True)  # --out inside a source folder: its sketches
    (tmp_path / "sub" / "out" / "b-1" / "sketch.blend").write_text("x")  # are never assets themselves
    assert sources.expand([str(tmp_path / "sub")], exclude=str(tmp_path / "sub" / "out")) == [
        str(tmp_path / "sub" / "b.obj")]
    (tmp_path / "mesh[1].obj").write_text("v 0 0 0\n")  # glob characters in a real file name
    assert sources.expand([str(tmp_path / "mesh[1].obj")]) == [str(tmp_path / "mesh[1].obj")]


def test_index_cuts_a_torn_last_line_and_skips_only_matching_finished_assets(tmp_path):
    index.append(str(tmp_path), {"asset": "a", "status": "ok", "content_hash": "c", "settings_hash": "s",
                                 "outputs": {"blend": "a.blend"}})
    with open(tmp_path / index.INDEX, "a") as f:
        f.write('{"asset": "b", "status": "o')  # a writer killed mid-line
    latest = index.read(str(tmp_path))
    assert list(latest) == ["a"] and not (tmp_path / index.INDEX).read_text().endswith("\n")  # readers leave it
    assert index.read(str(tmp_path), repair=True) == latest
    assert (tmp_path / index.INDEX).read_text().endswith("}\n")  # the driver, holding the lock, cuts it
    (tmp_path / "a.blend").write_text("x")
    assert index.is_done(latest["a"], "c", "s", str(tmp_path))
    assert not index.is_done(latest["a"], "c", "other settings", str(tmp_path))
    assert not index.is_done(latest["a"], "changed file", "s", str(tmp_path))
    os.remove(tmp_path / "a.blend")
    assert not index.is_done(latest["a"], "c", "s", str(tmp_path))  # outputs gone: redo
    assert not index.is_done({**latest["a"], "status": "crashed"}, "c", "s", str(tmp_path))


def test_a_second_batch_on_the_same_folder_is_refused(tmp_path):
    held = index.lock(str(tmp_path))
    code = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {REPO!r}); from batch import index\n"
                           f"try: index.lock({str(tmp_path)!r})\nexcept index.LockedError as e: print(e); sys.exit(3)"],
                          capture_output=True, text=True)
    assert code.returncode == 3 and f"pid {os.getpid()}" in code.stdout
    held.close()


def test_on_an_existing_cluster_reruns_redo_exactly_what_changed_and_a_timeout_is_retried(env, library, tmp_path):
    """`ray start --head` (a real one-node cluster, 2 CPUs), then `--address`: the same run on it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    head = subprocess.Popen([os.path.join(REPO, ".venv", "bin", "ray"), "start", "--head", "--block", "--num-cpus", "2",
                             "--node-ip-address", "127.0.0.1", f"--port={port}", "--include-dashboard=false",
                             f"--temp-dir={env['RAY_TMPDIR']}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**env, "RAY_USAGE_STATS_ENABLED": "0"}, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        out = tmp_path / "out"
        mesh = tmp_path / "tetra.obj"
        mesh.write_bytes((library / "tetra.obj").read_bytes())
        for _ in range(120):  # the head takes a few seconds to listen
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        time.sleep(2.0)
        # This HOME holds ~/.ray/auth_token (the local instances above made it), so the head requires it.
        done = batch(env, mesh, "--out", out, "--address", address, *TINY, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"on Ray at {address} (2 CPUs)" in done.stdout
        (record,) = index.read(str(out)).values()
        assert record["status"] == "ok" and os.path.isfile(out / record["outputs"]["blend"])

        def again(*extra):
            return batch(env, mesh, "--out", out, "--address", address, *TINY, *extra, timeout=300)

        assert "0 to sketch, 1 already done" in again().stdout  # unchanged: nothing to do
        assert "1 to sketch, 0 already done" in again("--curves", "2").stdout  # other settings: redone
        with open(mesh, "a") as f:
            f.write("# touched\n")
        assert "1 to sketch" in again("--curves", "2").stdout  # the file changed: redone
        refused = again("--curves", "0")  # checked where the assets run, before anything is queued
        assert refused.returncode == 2 and "'curves' must be between 1 and 1024" in refused.stderr, refused.stderr
        stuck = again("--force", "--timeout", "1")
        assert stuck.returncode == 1, stuck.stdout + stuck.stderr
        (record,) = index.read(str(out)).values()
        assert record["status"] == "timeout" and record["reason"] == "timed out after 1 s (--timeout)", record
        assert not processes_with(str(out)), "the timed-out Blender process is still running"
        retried = again()  # a timeout is not final: the next run tries again
        assert retried.returncode == 0 and "1 to sketch" in retried.stdout, retried.stdout + retried.stderr
    finally:  # a blocking `ray start` stops its processes on SIGINT (it ignores SIGTERM)
        head.send_signal(signal.SIGINT)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def test_index_lines_of_the_wrong_type_are_skipped_with_a_warning(tmp_path):
    from batch import gallery

    good = {"asset": "a", "status": "ok", "source": "/lib/a.obj", "metrics": {"f_mean": 0.5, "f_min": "x"},
            "outputs": {"sheet": "a/sheet.png"}, "seconds": 3}
    lines = [json.dumps(good), '{"asset": "zzz", "metrics": [1]}', '{"asset": "a", "status": "ok", "outputs": [1]}',
             "[1, 2]", '{"asset": "b", "status": "ok", "seconds": "slow"}', "not json at all",
             "[" * 100_000 + "]" * 100_000, ""]  # the last: deeper than the JSON parser's stack
    (tmp_path / index.INDEX).write_text("\n".join(lines) + "\n")
    heard = []
    latest = index.read(str(tmp_path), warn=heard.append)
    assert latest == {"a": good}  # the bad later line of "a" does not replace its good one
    assert len(heard) == 1 and "skipped 6 unusable line(s) (line 2: unknown status None and 5 more)" in heard[0]
    page = gallery.write(str(tmp_path), list(latest.values()))  # a string where a figure belongs: a dash
    assert "worst view -" in open(page).read()


def _tmpfs_runner(tmp_path):
    """``unshare`` with a mount namespace, in which a small tmpfs is mounted on a folder: a real full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs {mount}"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no tmpfs in a user namespace here: {probe.stderr.strip()}")

    def run(script: str, size: str, env=None, timeout=60):
        inner = f'mount -t tmpfs -o size={size} tmpfs "$1" && exec "$2" -c "$3" "$1"'
        done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", inner, "sh", str(mount),
                               PYTHON, script], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])
    return run


FILL = """
import os, sys
def fill(folder, leave=0):
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize - leave
    with open(os.path.join(folder, "filler"), "wb") as f:
        while free > 0:
            try:
                free -= f.write(b"x" * min(free, 1 << 16))
                f.flush()
            except OSError:
                break
"""


def test_on_a_full_disk_the_index_and_the_gallery_stay_whole(tmp_path):
    run = _tmpfs_runner(tmp_path)
    script = FILL + f"""
import json
sys.path.insert(0, {REPO!r})
from batch import gallery, index
out = sys.argv[1]
index.append(out, {{"asset": "a", "status": "ok", "source": "/a.obj", "seconds": 1}})
gallery.write(out, list(index.read(out).values()))
page = open(os.path.join(out, "index.html")).read()
with open(os.path.join(out, index.INDEX), "ab") as f:  # the last page of the index nearly full
    f.write(b"\\n" * (4096 - os.path.getsize(os.path.join(out, index.INDEX)) - 40))
before = open(os.path.join(out, index.INDEX), "rb").read()
fill(out)
errors = []
for record in ({{"asset": "b", "status": "ok", "reason": "x" * 200}}, {{"asset": "c", "status": "ok"}}):
    try:
        index.append(out, record)
    except index.WriteError as error:
        errors.append(str(error))
try:
    gallery.write(out, list(index.read(out).values()) * 200)
    errors.append("the page was written")
except OSError as error:
    errors.append(error.strerror)
after = open(os.path.join(out, index.INDEX), "rb").read()
print(json.dumps({{"errors": errors, "index_same": after[:len(before)] == before, "added": after[len(before):].decode(),
                  "page_same": open(os.path.join(out, "index.html")).read() == page,
                  "files": sorted(os.listdir(out)), "latest": sorted(index.read(out))}}))
"""
    seen = run(script, "256k")
    assert len(seen["errors"]) == 2 and all("No space left on device" in e for e in seen["errors"]), seen
    # The long line did not fit and was cut back off; the short one after it fits whole, on a clean line.
    assert seen["index_same"] and seen["added"] == '{"asset": "c", "status": "ok"}\n', seen
    assert seen["page_same"], seen  # the old page kept
    assert seen["files"] == ["filler", "index.html", "index.jsonl"], seen  # no index.html.tmp-PID
    assert seen["latest"] == ["a", "c"], seen


def test_a_full_disk_during_a_batch_is_recorded_stops_it_with_one_message_and_a_rerun_finishes(env, library, tmp_path):
    run = _tmpfs_runner(tmp_path)
    script = FILL + f"""
import json, subprocess
out = os.path.join(sys.argv[1], "out")
argv = [{PYTHON!r}, {BATCH!r}, {str(library / "cube.obj")!r}, {str(library / "tetra.obj")!r}, "--out", out,
        "--cpus", "2", "--jobs", "1", *{TINY!r}]
os.makedirs(out)
fill(sys.argv[1], leave=64 << 10)
first = subprocess.run(argv, capture_output=True, text=True)
path = os.path.join(out, "index.jsonl")
lines = open(path).read().splitlines() if os.path.exists(path) else []
left = sorted(os.path.relpath(os.path.join(root, name), out) for root, dirs, files in os.walk(out)
              for name in dirs + files if ".tmp-" in name or name == ".staging")
os.remove(os.path.join(sys.argv[1], "filler"))
second = subprocess.run(argv, capture_output=True, text=True)
sys.path.insert(0, {REPO!r})
from batch import index
print(json.dumps({{"first": [first.returncode, first.stdout, first.stderr], "lines": lines, "left": left,
                  "second": [second.returncode, second.stdout, second.stderr],
                  "latest": {{os.path.basename(r["source"]): r["status"] for r in index.read(out).values()}}}}))
"""
    seen = run(script, "8m", env=env, timeout=900)
    code, stdout, stderr = seen["first"]
    assert code == 1 and "Traceback" not in stderr, stdout + stderr
    assert stderr.count("splatsketch-batch: error: no space left") == 1, stderr
    assert "1 asset(s) not started" in stderr, stderr
    (line,) = [json.loads(text) for text in seen["lines"]]  # the first asset: recorded, not lost
    assert line["status"] == "crashed" and line["no_space"] and "no space left" in line["reason"], line
    assert seen["left"] == [], seen["left"]  # no staging folder, no index.html.tmp-PID
    code, stdout, stderr = seen["second"]
    assert code == 0, stdout + stderr
    assert seen["latest"] == {"cube.obj": "ok", "tetra.obj": "ok"}, seen["latest"]


def _descendants(pid: int) -> set[int]:
    done = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True)
    children: dict[int, list[int]] = {}
    for line in done.stdout.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_driver_leaves_no_process_and_the_local_instance_listens_on_loopback(env, library, tmp_path):
    out = tmp_path / "out"
    home = tmp_path / "home"
    own = {**env, "HOME": str(home), "BLENDER_USER_RESOURCES": str(home / "blender")}
    long = [*TINY, "--iterations", "100000"]
    top = subprocess.Popen([PYTHON, BATCH, library / "cube.obj", library / "tetra.obj", "--out", out, "--cpus", "2",
                            *long], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=own, cwd=REPO)
    deadline = time.monotonic() + 300
    while len(processes_with(f"{out}/.staging")) < 2 and time.monotonic() < deadline and top.poll() is None:
        time.sleep(0.2)
    time.sleep(3.0)
    tree = _descendants(top.pid)
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
    ours = [line for line in listening if any(f"pid={pid}," in line for pid in tree | {top.pid})]
    (driver,) = [pid for pid in tree if str(out) in _command(pid) and _descendants(pid) and pid in _children(top.pid)]
    os.kill(driver, signal.SIGKILL)
    stdout, stderr = top.communicate(timeout=120)
    assert top.returncode == 128 + signal.SIGKILL, stdout + stderr
    # the reaper has returned; what it SIGKILLed may take a moment to leave the process table
    deadline = time.monotonic() + 15
    while processes_with(str(out)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(processes_with(str(out))) == 0 and len(tree) > 8, tree
    alive = [pid for pid in tree if _alive(pid)]
    assert not alive, f"a process of the killed batch lives on: {_describe(alive)}"
    assert ours and all(line.split()[3].startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")) for line in ours), \
        "\n".join(ours)
    assert os.stat(home / ".ray" / "auth_token").st_mode & 0o777 == 0o600
    assert not list(home.glob("**/splatsketch/jobs/*")), "a job folder was left in the extension's user folder"
    assert not (out / ".staging").exists()


def _command(pid: int) -> str:
    """A process's command line; "" once it has ended (the tree holds short-lived helpers too)."""
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except OSError:
        return ""


def _describe(pids) -> str:
    """What a survivor is: its state, parent and command line (for a failure's message)."""
    lines = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            lines.append(f"{pid} gone")
            continue
        lines.append(f"{pid} state {stat[0]} parent {stat[1]}: {_command(pid).replace(chr(0), ' ')[:200]}")
    return "; ".join(lines)


def _children(pid: int) -> set[int]:
    done = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(p) for p in done.stdout.split()}


def test_a_bad_index_line_is_skipped_and_a_renamed_asset_keeps_its_sketch(env, library, tmp_path):
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    out.mkdir()
    (lib / "old name.obj").write_bytes((library / "tetra.obj").read_bytes())
    (out / index.INDEX).write_text('{"asset": "zzz", "metrics": [1]}\n')
    first = batch(env, lib, "--out", out, "--cpus", "2", *TINY)
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stdout + first.stderr
    assert "skipped 1 unusable line(s)" in first.stderr
    assert not (out / ".staging").exists()
    (old,) = [r for r in index.read(str(out)).values() if r["status"] == "ok"]
    os.rename(lib / "old name.obj", lib / "new name.obj")
    second = batch(env, lib, "--out", out, "--cpus", "2", *TINY)
    assert second.returncode == 0 and "1 assets: 0 to sketch, 1 already done" in second.stdout, second.stdout
    assert "(renamed): its sketch moved, not redone" in second.stdout
    latest = index.read(str(out))
    assert latest[old["asset"]]["status"] == index.RENAMED and not (out / old["asset"]).exists()
    (new,) = [r for r in latest.values() if r["status"] == "ok"]
    assert new["source"] == str(lib / "new name.obj") and new["content_hash"] == old["content_hash"]
    assert all(os.path.isfile(out / path) for path in new["outputs"].values()), new["outputs"]
    page = (out / "index.html").read_text()
    assert "new name.obj" in page and "old name.obj" not in page
