"""Make a wheel folder for an offline backend set-up from a Python environment that already has the
backend (the project's .venv): every distribution of the runtime set and its dependencies, at the
versions installed there, as wheel files.

    .venv/bin/python bench/wheel_folder.py OUT_DIR [--search DIR ...]

A wheel already on this machine (``--search`` folders, default the pip wheel folders listed in
``pip config``'s find-links and local ``file://`` indexes) is hard-linked (or copied); a distribution with no wheel
anywhere is packed from its installed files (its RECORD, with the tags its WHEEL file names), which
is exact for pure-Python packages. Nothing is downloaded. Studios with a network-connected machine
can use ``pip download -d OUT_DIR torch torchvision open_clip_torch gsplat numpy`` instead.

Then: ``blender -b -c splatsketch --setup-backend --find-links OUT_DIR`` on the offline machine.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> dict[str, md.Distribution]:
    """The installed distributions the runtime set needs (markers evaluated for this Python)."""
    from packaging.markers import Marker
    from packaging.requirements import Requirement

    sys.path.insert(0, str(REPO))
    from backend.setup_env import runtime_requirements

    found: dict[str, md.Distribution] = {}
    done: set[tuple[str, str]] = set()
    stack = [(r.name, extra) for r in map(Requirement, runtime_requirements()) for extra in ("", *r.extras)]
    while stack:
        name, extra = stack.pop()
        if (norm(name), extra) in done:
            continue
        done.add((norm(name), extra))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"wheel_folder: {name} is not installed in {sys.prefix}") from None
        found[norm(name)] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or Marker(str(req.marker)).evaluate({"extra": extra}):
                stack += [(req.name, e) for e in ("", *req.extras)]
    return found


def default_search() -> list[Path]:
    """pip's configured find-links folders and file:// indexes' file folders on this machine."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    dirs = []
    for value in re.findall(r"(?:find-links|index-url)='([^']+)'", out):
        for item in value.split():
            path = Path(item.removeprefix("file://"))
            dirs += [path, path.parent / "files"] if path.name == "simple" else [path]
    return [d for d in dirs if d.is_dir()]


def local_wheel(dist: md.Distribution, search: list[Path]) -> Path | None:
    """A wheel file of exactly this distribution and version in ``search``, or None."""
    want = (norm(dist.metadata["Name"]), dist.version)
    for folder in search:
        for path in folder.glob("*.whl"):
            parts = path.name.split("-")
            if len(parts) >= 5 and (norm(parts[0]), parts[1]) == want:
                return path
    return None


def pack(dist: md.Distribution, out: Path) -> Path:
    """A wheel of an installed distribution, from its RECORD (scripts go to .data/scripts)."""
    info = Path(dist._path)  # noqa: SLF001 - importlib.metadata keeps the dist-info folder here
    site = info.parent
    tags = [line.split(":", 1)[1].strip() for line in (info / "WHEEL").read_text().splitlines()
            if line.startswith("Tag:")] if (info / "WHEEL").exists() else ["py3-none-any"]
    name = norm(dist.metadata["Name"]).replace("-", "_")
    path = out / f"{name}-{dist.version}-{tags[0]}.whl"
    data = f"{name}-{dist.version}.data"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for entry in dist.files or []:
            source = (site / entry).resolve()
            rel = str(entry)
            if rel.endswith(".pyc") or "__pycache__" in rel or rel.endswith("/RECORD"):
                continue
            if rel.startswith(".."):
                if "/bin/" not in rel:
                    continue
                rel = f"{data}/scripts/{Path(rel).name}"
            if not source.is_file():
                continue
            payload = source.read_bytes()
            zf.writestr(rel, payload)
            digest = base64.urlsafe_b64encode(hashlib.sha256(payload).digest()).rstrip(b"=").decode()
            record.append(f"{rel},sha256={digest},{len(payload)}")
        record_name = f"{info.name}/RECORD"
        record.append(f"{record_name},,")
        zf.writestr(record_name, "\n".join(record) + "\n")
    return path


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows (no space, and it stays valid inside a chroot that
    sees only this folder), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--search", action="append", default=None, help="folders holding wheels (repeatable)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    search = [Path(s) for s in args.search] if args.search else default_search()
    linked = packed = 0
    for key, dist in sorted(runtime_closure().items()):
        wheel = local_wheel(dist, search)
        if wheel is not None:
            target = out / wheel.name
            if not target.exists():
                _link_or_copy(wheel, target)
            linked += 1
        else:
            pack(dist, out)
            packed += 1
            print(f"packed {key} {dist.version} from {sys.prefix}", flush=True)
    print(f"wheel folder {out}: {linked} linked from {', '.join(map(str, search))}, {packed} packed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
