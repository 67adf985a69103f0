"""The PNG writer and reader, kept importable here: they live in :mod:`.pixels` with the rest of the
Blender side's numpy-only pixel and file code."""

from .pixels import read_png, write_png

__all__ = ["read_png", "write_png"]
