"""What to sketch: files, folders, globs and text files of paths, expanded into assets.

An asset is one source file (a mesh, or a .blend with the objects to sketch in it). Its id names its
output folder: the file's stem (readable) plus a short hash of the absolute path and the selection
(unique, and the same on every rerun, so a rerun finds what the last run made).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass

from contract.protocol import MESH_FORMATS

BLEND = ".blend"
ASSET_FORMATS = (*MESH_FORMATS, BLEND)
LIST_FORMATS = (".txt", ".lst")  # a text file of paths, one per line, '#' starts a comment


class SourceError(Exception):
    """A source that cannot be used as given: the batch does not start."""


@dataclass(frozen=True)
class Asset:
    source: str  # absolute path
    selection: tuple[str, ...]  # for a .blend: the CLI's --collection/--objects/--object options
    id: str

    @property
    def is_blend(self) -> bool:
        return self.source.lower().endswith(BLEND)


def asset_id(source: str, selection: tuple[str, ...] = ()) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(os.path.basename(source))[0]).strip("._")[:40]
    digest = hashlib.sha1("\0".join((source, *selection)).encode()).hexdigest()[:16]  # 64 bits: libraries repeat stems
    return f"{stem or 'asset'}-{digest}"


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _walk(folder: str, exclude: str | None) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(root, d) != exclude)
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(ASSET_FORMATS)]
    return found


def _inside(path: str, folder: str | None) -> bool:
    return bool(folder) and (path == folder or path.startswith(folder.rstrip(os.sep) + os.sep))


def expand(sources: list[str], base: str | None = None, exclude: str | None = None, _depth: int = 0) -> list[str]:
    """Absolute paths of every asset file the sources name, in the order given, without repeats.
    Nothing under ``exclude`` (the batch's own output folder: its .blend files are sketches)."""
    if _depth > 4:
        raise SourceError("lists of paths nest deeper than 4 levels")
    out: list[str] = []
    for text in sources:
        path = os.path.expanduser(text)
        if base and not os.path.isabs(path):
            path = os.path.join(base, path)
        path = os.path.abspath(path)
        if _is_glob(text) and not os.path.exists(path):  # a file named "mesh[1].obj" is that file
            matches = sorted(glob.glob(path, recursive=True))
            files = [m for m in matches if os.path.isfile(m) and m.lower().endswith(ASSET_FORMATS)]
            files += [f for m in matches if os.path.isdir(m) for f in _walk(m, exclude)]
            files = [f for f in files if not _inside(f, exclude)]
            if not files:
                raise SourceError(f"'{text}' matches no {'/'.join(ASSET_FORMATS)} file")
            out += files
        elif os.path.isdir(path):
            files = [f for f in _walk(path, exclude) if not _inside(f, exclude)]
            if not files:
                raise SourceError(f"folder '{text}' holds no {'/'.join(ASSET_FORMATS)} file")
            out += files
        elif not os.path.exists(path):
            raise SourceError(f"'{text}' does not exist")
        elif path.lower().endswith(LIST_FORMATS):
            try:
                with open(path, encoding="utf-8") as f:
                    lines = [line.split("#", 1)[0].strip() for line in f]
            except (OSError, UnicodeDecodeError) as error:
                raise SourceError(f"cannot read the list '{text}': {error}") from None
            out += expand([line for line in lines if line], os.path.dirname(path), exclude, _depth + 1)
        elif path.lower().endswith(ASSET_FORMATS):
            if not _inside(path, exclude):
                out.append(path)
        else:
            raise SourceError(f"'{text}' is not a {'/'.join(ASSET_FORMATS)} file, a folder, a glob or a "
                              f"{'/'.join(LIST_FORMATS)} list of paths")
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def assets(sources: list[str], selection: tuple[str, ...] = (), exclude: str | None = None) -> list[Asset]:
    paths = expand(sources, exclude=exclude)
    if not paths:
        raise SourceError("the sources name no asset (empty lists, or only the --out folder)")
    found = [Asset(p, selection if p.lower().endswith(BLEND) else (),
                   asset_id(p, selection if p.lower().endswith(BLEND) else ())) for p in paths]
    ids: dict[str, str] = {}
    for asset in found:
        if ids.setdefault(asset.id, asset.source) != asset.source:
            raise SourceError(f"'{asset.source}' and '{ids[asset.id]}' would share the output folder {asset.id}")
    return found


def content_hash(path: str) -> str:
    """sha256 of what the import reads: the file, and for a .gltf the buffers and images it names."""
    digest = hashlib.sha256()
    files = [path]
    if path.lower().endswith(".gltf"):
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            for item in doc.get("buffers", []) + doc.get("images", []):
                uri = item.get("uri", "")
                if uri and not uri.startswith("data:"):
                    files.append(os.path.join(os.path.dirname(path), uri))
        except (OSError, ValueError, AttributeError):
            pass  # a broken .gltf: the run reports it; its bytes are still hashed
    for name in files:
        try:
            with open(name, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            digest.update(f"missing:{os.path.basename(name)}".encode())
    return "sha256:" + digest.hexdigest()
