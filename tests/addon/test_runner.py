"""The runner's bookkeeping (jobs/runner.py, no bpy): folder names and pruning next to parallel runs."""

import importlib
import os
import subprocess
import sys

from conftest import ADDON


def _runner():
    return importlib.import_module(ADDON + ".jobs.runner")


def test_names_make_safe_path_parts():
    safe_name = _runner().safe_name
    for name in ("../../etc/passwd", "a/b\\c", "..", ".hidden", "x" * 90, "", "Suzanne.001", "Stuhl/..//Tür"):
        part = safe_name(name)
        assert part and "/" not in part and "\\" not in part and ".." not in part and not part.startswith(".")
        assert len(part) <= 40
    assert safe_name("Suzanne.001") == "Suzanne.001"


def test_pruning_never_removes_a_folder_a_live_run_uses(tmp_path):
    """Without --job-dir every run prunes the shared jobs folder to its 8 newest entries; a 9th run
    started in parallel must not delete a folder whose run is still going (it failed as 'a bug')."""
    runner = _runner()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        folders = []
        for i in range(12):
            folder = tmp_path / f"job-{i:02d}"
            folder.mkdir()
            owner = live.pid if i < 3 else gone.pid if i < 6 else None
            if owner:
                (folder / ".owner").write_text(str(owner))
            os.utime(folder, (1_000_000 + i, 1_000_000 + i))  # oldest first
            folders.append(folder)
        runner.prune_old(str(tmp_path), keep=4)
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == [f"job-{i:02d}" for i in (0, 1, 2, 8, 9, 10, 11)], left
    finally:
        live.kill()
        live.wait()


def test_own_claimed_folder_is_in_use(tmp_path):
    runner = _runner()
    runner.claim(str(tmp_path))
    assert runner.in_use(str(tmp_path))
    (tmp_path / ".owner").write_text("not a pid")
    assert not runner.in_use(str(tmp_path))


def test_the_modal_driver_checks_its_contract_when_the_class_is_made():
    driver = importlib.import_module(ADDON + ".operators.driver")
    try:
        type("Broken", (driver.ModalRun,), {"_begin": lambda self, context, live_preview, log=None: None})
    except TypeError as error:
        assert "_end" in str(error)
    else:
        raise AssertionError("a ModalRun without _end must be refused when the class is made")
