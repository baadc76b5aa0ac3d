"""Extract the runnable snippets that README.md marks with ``<!-- snippet:NAME -->``."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- snippet:{re.escape(name)} -->\s*```python\n(.*?)```", text, flags=re.S)
    if match is None:
        raise LookupError(f"README.md has no python snippet marked <!-- snippet:{name} -->")
    return match.group(1)
