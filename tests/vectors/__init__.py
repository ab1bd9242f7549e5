"""Loader for the known-answer files beside this module (each names its source in a header)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def _value(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith('"') and raw.endswith('"'):
        return raw[1:-1].encode().hex()  # text values are compared as bytes, like hex ones
    return raw.lower()


def load_blocks(name: str) -> list[dict[str, str]]:
    """Blank-line separated blocks of 'key = value' lines; '#' starts a comment line."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in (HERE / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        if not line:
            if current:
                blocks.append(current)
            current = {}
            continue
        if line.startswith("[") and line.endswith("]"):
            current["section"] = line[1:-1]
            continue
        key, _, value = line.partition("=")
        current[key.strip()] = value.strip() if key.strip() == "name" else _value(value)
    if current:
        blocks.append(current)
    return blocks
