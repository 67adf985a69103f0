"""Small drawing helpers the sidebar panels and the Preferences share: Blender's labels do not wrap,
and its progress bar is missing before 4.0. They take a ``UILayout`` and import nothing of bpy."""

from __future__ import annotations


def wrap(text: str, width: int) -> list[str]:
    """Panel labels do not wrap; split long messages on spaces."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def progress(layout, factor: float, text: str) -> None:
    """A progress bar (Blender 4.0+), or the same as a label."""
    if hasattr(layout, "progress"):
        layout.progress(factor=factor, type="BAR", text=text)
    else:
        layout.label(text=f"{factor:.0%} {text}")


def labels(layout, lines: list[str], icon: str) -> None:
    """Lines of one message, close together, the icon on the first."""
    col = layout.column(align=True)
    for i, line in enumerate(lines):
        col.label(text=line, icon=icon if i == 0 else "BLANK1")


def shorten(text: str, width: int) -> str:
    """A one-line status for the progress bar: a long package list is cut after a whole name."""
    if len(text) <= width:
        return text
    head = text[:width]
    return head.rsplit(", ", 1)[0] + ", ..." if ", " in head else head[:-3] + "..."


def prop_rows(layout, owner, *names: str) -> None:
    """One row per property of ``owner``, in order, with its own label."""
    for name in names:
        layout.prop(owner, name)
