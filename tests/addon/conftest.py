"""Shared fixtures of the add-on tests (run under the ``bpy`` wheel, 5.0.1 and 4.2.0).

The extension is loaded the way Blender loads an installed one, at import time so that every test
module (and its module-level imports) sees the same package: a user repository whose folder holds
``splatsketch -> <repository>``, then ``addon_enable("bl_ext.splatsketch_test.splatsketch")``.
Blender's user folder is pointed at a temporary directory first, so test runs never touch the
developer's ~/.config/blender (job folders and worker logs land there).
"""

import os
import shutil
import subprocess
import sys
import tempfile

os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="splatsketch-test-user-")

import bpy  # noqa: E402  (after BLENDER_USER_RESOURCES is set)
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO_MODULE = "splatsketch_test"
ADDON = f"bl_ext.{REPO_MODULE}.splatsketch"
BACKEND_PYTHON = os.path.join(REPO, ".venv", "bin", "python")
DATA = ("objects", "meshes", "curves", "materials", "collections", "images", "node_groups", "cameras", "lights")

_REPO_DIR = tempfile.mkdtemp(prefix="splatsketch-test-repo-")
os.symlink(REPO, os.path.join(_REPO_DIR, "splatsketch"))
bpy.context.preferences.extensions.repos.new(name="SplatSketch tests", module=REPO_MODULE,
                                             custom_directory=_REPO_DIR, source="USER")


def enable_addon():
    """Enable the extension if it is not (a test may have disabled it); return its package module."""
    import addon_utils  # Blender's module: importable once bpy is

    if not addon_utils.check(ADDON)[1]:
        bpy.ops.preferences.addon_enable(module=ADDON)
    return sys.modules[ADDON]


enable_addon()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_REPO_DIR, ignore_errors=True)
    shutil.rmtree(os.environ["BLENDER_USER_RESOURCES"], ignore_errors=True)
    session.config.splatsketch_exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without tearing the bpy module down: the bpy 4.2 wheel can segfault in its exit handlers
    after every test has passed and the summary is printed, which would fail the run for nothing."""
    status = getattr(config, "splatsketch_exit_status", None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


@pytest.fixture(autouse=True)
def factory_scene():
    """Every test starts from Blender's factory startup file (Cube, Camera, Light) and leaves it so."""
    bpy.ops.wm.read_homefile(use_factory_startup=True)
    enable_addon()
    yield
    bpy.ops.wm.read_homefile(use_factory_startup=True)
    enable_addon()


@pytest.fixture
def addon():
    """The extension's package as Blender imported it (``bl_ext.splatsketch_test.splatsketch``)."""
    return enable_addon()


def scene_state() -> dict:
    """Names of every object, mesh, curve, material, collection, ... : what a failed run must not change."""
    return {kind: sorted(item.name for item in getattr(bpy.data, kind)) for kind in DATA}


def _has_torch(python: str) -> bool:
    if not os.path.isfile(python):
        return False
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def backend_python():
    """The worker's Python (.venv, with torch), also when the tests run under .venv-bpy42."""
    if not _has_torch(BACKEND_PYTHON):
        pytest.skip(f"no backend Python with torch at {BACKEND_PYTHON}: run `make backend`")
    return BACKEND_PYTHON


@pytest.fixture
def suzanne():
    """Blender's Suzanne (the embedded primitive; nothing downloaded), named "Suzanne"."""
    bpy.ops.mesh.primitive_monkey_add()
    obj = bpy.context.active_object
    obj.name = "Suzanne"
    return obj
