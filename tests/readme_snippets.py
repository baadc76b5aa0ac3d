"""The code blocks of README.md and of every docs/ page, and the runnable snippets they mark with
``<!-- snippet:NAME -->``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# A fenced block, possibly indented inside a list item; the closing fence has the opening one's indentation.
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
_MARK = re.compile(r"<!-- snippet:(?P<name>[\w-]+) -->[ \t]*\n$")


@dataclass(frozen=True)
class CodeBlock:
    page: Path
    line: int              # 1-based line of the opening fence
    lang: str
    code: str              # dedented body
    snippet: str | None    # the name of its <!-- snippet:NAME --> mark, if it has one

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def code_blocks(page: Path) -> list[CodeBlock]:
    text = page.read_text(encoding="utf-8")
    blocks = []
    for m in _FENCE.finditer(text):
        indent = len(m.group("indent"))
        code = "".join(line[indent:] if not line[:indent].strip() else line.lstrip()
                       for line in m.group("body").splitlines(keepends=True))
        mark = _MARK.search(text, 0, m.start())
        name = mark.group("name") if mark is not None and mark.end() == m.start() else None
        blocks.append(CodeBlock(page, text.count("\n", 0, m.start()) + 1, m.group("lang"), code, name))
    return blocks


def all_code_blocks() -> list[CodeBlock]:
    return [b for page in pages() for b in code_blocks(page)]


def snippet(name: str) -> str:
    """The python block marked ``<!-- snippet:NAME -->`` on README.md or a docs/ page."""
    found = [b for b in all_code_blocks() if b.snippet == name and b.lang == "python"]
    if not found:
        raise LookupError(f"no page has a python snippet marked <!-- snippet:{name} --> (README.md, docs/)")
    if len(found) > 1:
        raise LookupError(f"snippet {name!r} is marked twice: {', '.join(b.where for b in found)}")
    return found[0].code
