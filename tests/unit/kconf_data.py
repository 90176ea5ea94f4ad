"""Paths and a line finder shared by the keepalived.conf parser and linter tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "kconf"
NODE_A = REPO / "deploy" / "keepalived.conf.example"
NODE_B = DATA / "good-node-b.conf"
ARBITER = REPO / "deploy" / "arbiter.toml.example"


def line_of(path: Path, text: str) -> int:
    """The one line of `path` that reads `text` once comments and indentation are stripped."""
    hits = [
        n
        for n, raw in enumerate(path.read_text().splitlines(), start=1)
        if raw.split("#")[0].split("!")[0].strip() == text
    ]
    assert len(hits) == 1, f"{text!r} is on lines {hits} of {path}, expected exactly one"
    return hits[0]
