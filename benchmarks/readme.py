"""Rewriting a generated block of the README, so quoted numbers always come from results JSON."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def replace_block(name: str, body: str) -> None:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->`` lines with ``body``."""
    text = README.read_text()
    start_m, end_m = f"<!-- {name} -->\n", f"<!-- /{name} -->\n"
    if start_m not in text or end_m not in text:
        raise SystemExit(f"README.md has no {start_m.strip()} ... {end_m.strip()} block")
    start, end = text.index(start_m), text.index(end_m)
    README.write_text(text[: start + len(start_m)] + body + text[end:])
