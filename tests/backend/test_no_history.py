"""Docs, comments, test names and messages state facts, not how the project was developed.

Numbered work steps, issue numbers, talk of "the change" at hand, device loans or a developer machine's
paths tell a user nothing: git's history keeps them. The checker is one function, run here on a
known-bad sample, on a throw-away git repository and on every tracked text file of this tree.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each pattern names one kind of history talk; all are matched case-insensitively.
PATTERNS = {
    "numbered stop": r"\bstops?[ -]\d+",
    "issue number": r"\bissues? #?\d+",
    "work session": r"\b(?:this|that|last|next|previous|earlier|later) session\b",
    "change talk": r"\bthis (?:change|stop|commit|pull request)\b",
    "machine path": r"/wo" r"rk/|/home/\w+/|/tmp/heavy\.lock",
    "device lending": r"\blent\b",
    "the fix's history": r"\b(?:before|after|until) the fix\b",
    "what old code did": r"\bused to (?:crash|abort|hang|fail|read|write|exit)\b",
}
_COMPILED = {name: re.compile(rx, re.IGNORECASE) for name, rx in PATTERNS.items()}


def history_hits(files) -> list[str]:
    """``path:line: kind: text`` for every line of ``files`` (pairs of path and text) that tells history."""
    hits = []
    for path, text in files:
        for number, line in enumerate(text.splitlines(), 1):
            for name, rx in _COMPILED.items():
                if rx.search(line):
                    hits.append(f"{path}:{number}: {name}: {line.strip()[:120]}")
    return hits


def tracked_text_files(root: Path):
    """(path, text) of every file git tracks under ``root`` that reads as UTF-8 text."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        path = root / name
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            yield name, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


# Samples and patterns are built from pieces so this file itself passes the tree-wide check.
_BAD = {
    "numbered stop": "as in st" "op 22, the defaults",
    "issue number": "the comparison of iss" "ue 12",
    "work session": "no GPU in th" "is session",
    "change talk": "the files of th" "is change",
    "machine path": "meshes in /wo" "rk/shared/data",
    "device lending": "the H100 we were le" "nt",
    "the fix's history": "be" "fore the fix, Blender aborted",
    "what old code did": "the header us" "ed to crash on them",
}
_CLEAN = [
    "def pytest_sessionfinish(session, exitstatus):",
    "a managed install runs in a session of its own (os.setsid)",
    "stop the run at the next iteration; issue a warning",
    "samples used to measure the result",
    "the files under /tmp/splatsketch-ui",
]


@pytest.mark.parametrize("kind", sorted(PATTERNS))
def test_each_kind_is_caught_on_a_bad_sample(kind):
    hits = history_hits([("bad.md", "a clean line\n" + _BAD[kind] + "\n")])
    assert hits and hits[0].startswith(f"bad.md:2: {kind}:"), hits


def test_plain_wording_is_not_flagged():
    assert history_hits([("clean.py", "\n".join(_CLEAN))]) == []


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_tracked_bad_file_is_named_with_its_line(tmp_path):
    (tmp_path / "notes.md").write_text("# Notes\n\nplain text\n" + _BAD["issue number"] + "\n")
    (tmp_path / "untracked.md").write_text(_BAD["numbered stop"] + "\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "notes.md"], cwd=tmp_path, check=True)
    hits = history_hits(tracked_text_files(tmp_path))
    assert [h.split(": ")[0] for h in hits] == ["notes.md:4"]


@pytest.mark.skipif(not (ROOT / ".git").exists() or shutil.which("git") is None,
                    reason="needs this project's git checkout")
def test_the_tree_tells_no_history():
    hits = history_hits(tracked_text_files(ROOT))
    assert not hits, f"{len(hits)} lines tell history (say the fact, or delete it):\n" + "\n".join(hits)
