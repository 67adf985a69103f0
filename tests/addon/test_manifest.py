"""The manifest passes Blender's own validator and builds the zip users install.

``blender_ext.py`` ships inside the bpy wheel (``scripts/addons_core/bl_pkg/cli/``), so the check is
Blender's, not ours; it runs under whichever wheel runs the tests (5.0.1 or 4.2.0).
"""

import os
import subprocess
import sys
import tomllib
import zipfile

import bpy
from conftest import REPO


def blender_ext() -> str:
    path = os.path.join(bpy.utils.system_resource("SCRIPTS"), "addons_core", "bl_pkg", "cli", "blender_ext.py")
    assert os.path.isfile(path), f"Blender's extension tool is missing from this bpy wheel: {path}"
    return path


def build_zip(out_dir) -> str:
    """Build the installable zip with Blender's tool; return its path (test_real_blender uses it too)."""
    done = subprocess.run([sys.executable, blender_ext(), "build", "--source-dir", REPO, "--output-dir",
                           str(out_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    zips = [n for n in os.listdir(out_dir) if n.endswith(".zip")]
    assert len(zips) == 1, zips
    return os.path.join(str(out_dir), zips[0])


def test_manifest_fields():
    with open(os.path.join(REPO, "blender_manifest.toml"), "rb") as f:
        manifest = tomllib.load(f)
    assert manifest["id"] == "splatsketch" and manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0" and manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert "files" in manifest["permissions"]


def test_validate():
    done = subprocess.run([sys.executable, blender_ext(), "validate", REPO], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_build_ships_the_addon_and_backend_only(tmp_path):
    with zipfile.ZipFile(build_zip(tmp_path)) as archive:
        names = archive.namelist()
    for needed in ("__init__.py", "blender_manifest.toml", "cli/__init__.py", "cli/sources.py", "pictures/capture.py",
                   "jobs/backend_process.py", "jobs/runner.py",
                   "contract/protocol.py", "panels/__init__.py", "scene/job_folder.py", "backend/__main__.py",
                   "backend/job.py", "backend/setup_env.py", "pyproject.toml"):
        assert needed in names, needed
    for name in names:
        top = name.split("/")[0]
        assert top not in ("tests", "docs", "bin", "bench", ".venv", ".venv-bpy42", ".git", ".ci", "Makefile")
        assert "__pycache__" not in name and not name.endswith(".pyc")
