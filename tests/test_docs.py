"""README.md and the docs/ pages: the README stays a landing page, its links lead to pages that exist, every
python block compiles (the marked snippets also run, in the tests that name them), and every shell command
names a module, flags, models, test files and extras that exist."""
from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

from readme_snippets import README, ROOT, all_code_blocks, pages

BLOCKS = all_code_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang in ("bash", "sh", "shell")]
TOML = [b for b in BLOCKS if b.lang == "toml"]
# Programs outside the project that a page may call; they are not checked further.
EXTERNAL = {"cd", "export", "mkdir", "ls", "cat", "git", ".", "source", "du", "time", "ffmpeg", "espeak-ng", "optuna-dashboard", "nvidia-smi"}


def test_readme_is_a_landing_page():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= 250, f"README.md has {n} lines; keep it a landing page (≤ 250) and move detail into docs/"


def _slug(heading: str) -> str:
    """The anchor that mkdocs' toc and GitHub give a heading (lower case, punctuation dropped, spaces → '-')."""
    text = re.sub(r"[`*_]", "", heading.strip()).lower()
    return re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", text)).strip("-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M)}


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_pages_and_headings_that_exist(page):
    text = re.sub(r"^[ \t]*```.*?^[ \t]*```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_the_pages_have_code_to_check():
    assert len(PYTHON) >= 8 and len(SHELL) >= 10, (len(PYTHON), len(SHELL))
    assert {b.page.name for b in PYTHON} >= {"blocks.md", "plugins.md", "data.md", "training.md", "models.md"}


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.where)
def test_python_block_compiles(block):
    compile(block.code, block.where, "exec")


def test_every_marked_snippet_is_run_by_a_test():
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py"))
    marked = {b.snippet for b in PYTHON if b.snippet}
    assert marked >= {"own-model", "plugin-module", "plugin-use", "swap-block"}
    unused = sorted(name for name in marked if f'snippet("{name}")' not in sources)
    assert not unused, f"snippets marked on a page but run by no test: {unused}"


@pytest.mark.parametrize("block", TOML, ids=lambda b: b.where)
def test_toml_block_parses(block):
    tomllib.loads(block.code)


# ---- shell commands -------------------------------------------------------------------------------------

def _commands(code: str) -> tuple[list[list[str]], list[str]]:
    """Simple commands (argv lists) of a shell block, and the bodies of its ``python - <<'EOF'`` here-documents."""
    commands, heredocs = [], []
    lines = code.replace("\\\n", " ").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        if "<<" in tokens:
            end = tokens[tokens.index("<<") + 1]
            body = []
            while i < len(lines) and lines[i].strip() != end:
                body.append(lines[i])
                i += 1
            i += 1
            heredocs.append("\n".join(body) + "\n")
            tokens = tokens[:tokens.index("<<")]
        current: list[str] = []
        for tok in tokens:
            if tok in ("&&", "||", "|", ";", "&"):
                commands.append(current)
                current = []
            else:
                current.append(tok)
        commands.append(current)
    return [c for c in commands if c], heredocs


def _strip_wrappers(argv: list[str]) -> list[str]:
    """Drop environment assignments and the wrappers the pages use (flock, nice, timeout)."""
    while argv:
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
            argv = argv[1:]
        elif argv[0] == "flock":
            argv = argv[2:]
        elif argv[0] in ("nice", "timeout"):
            argv = argv[1:]
            while argv and (argv[0].startswith("-") or argv[0].lstrip("-").isdigit()):
                argv = argv[1:]
        else:
            return argv
    return argv


@lru_cache(maxsize=None)
def _help(module: str, prefix: tuple[str, ...]) -> str:
    mod = importlib.import_module(module)
    if hasattr(mod, "__path__"):    # a package runs as its __main__ module
        mod = importlib.import_module(f"{module}.__main__")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(SystemExit) as exit_:
            mod.main([*prefix, "--help"])
    assert exit_.value.code == 0, f"python -m {module} {' '.join(prefix)} --help exited {exit_.value.code}"
    return out.getvalue()


@lru_cache(maxsize=None)
def _models() -> frozenset[str]:
    from fusionkit.registry import get_registry
    return frozenset(get_registry().names("model"))


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return set(project.get("optional-dependencies", {}))


def _check_module_command(module: str, args: list[str], where: str) -> None:
    if module == "pytest":
        for arg in args:
            if arg.startswith("-") or not arg.startswith("tests"):
                continue
            path, _, test = arg.partition("::")
            assert (ROOT / path).exists(), f"{where}: pytest target {path} does not exist"
            if test:
                assert f"def {test.split('[')[0]}(" in (ROOT / path).read_text(encoding="utf-8"), \
                    f"{where}: {path} has no test {test}"
        return
    prefix = []
    for arg in args:
        if arg.startswith("-"):
            break
        prefix.append(arg)
    text = _help(module, tuple(prefix))
    for k, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        flag = arg.split("=", 1)[0]
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), \
            f"{where}: python -m {module} has no option {flag}"
        value = arg.split("=", 1)[1] if "=" in arg else (args[k + 1] if k + 1 < len(args) else "")
        if flag == "--models" and value != "all":
            unknown = set(value.split(",")) - _models()
            assert not unknown, f"{where}: --models names unregistered models {sorted(unknown)}"
        if flag == "--set":
            model = value.split(".", 1)[0]
            assert model in _models(), f"{where}: --set {value}: {model!r} is not a registered model"


@pytest.mark.parametrize("block", SHELL, ids=lambda b: b.where)
def test_shell_block_commands_exist(block):
    commands, heredocs = _commands(block.code)
    for body in heredocs:
        compile(body, f"{block.where} (here-document)", "exec")
    for argv in commands:
        argv = _strip_wrappers(argv)
        program, args = argv[0], argv[1:]
        if program in ("python", "python3", "torchrun"):
            if program == "torchrun":
                args = args[args.index("-m"):] if "-m" in args else args
            if args[:1] == ["-"]:
                assert heredocs, f"{block.where}: `python -` without a here-document"
                continue
            assert args[:1] == ["-m"] and len(args) > 1, f"{block.where}: expected `python -m MODULE`: {argv}"
            if args[1] == "venv":  # the standard library's
                assert len(args) == 3, f"{block.where}: expected `python -m venv DIR`: {argv}"
                continue
            _check_module_command(args[1], args[2:], block.where)
        elif program == "pytest":
            _check_module_command("pytest", args, block.where)
        elif program == "pip" and args[:1] == ["install"] and "-e" not in args:  # third-party packages
            assert len(args) > 1, f"{block.where}: `pip install` of nothing"
        elif program == "pip":
            assert args[:2] == ["install", "-e"], f"{block.where}: unexpected pip command {argv}"
            m = re.fullmatch(r"\.(?:\[(?P<extras>[\w,-]+)\])?", args[2])
            assert m, f"{block.where}: pip install -e of {args[2]!r}, not of the project"
            missing = set((m.group("extras") or "").split(",")) - {""} - _extras()
            assert not missing, f"{block.where}: pyproject.toml has no extra {sorted(missing)}"
        elif program == "mkdocs":
            assert args[:1] in (["build"], ["serve"]) and (ROOT / "mkdocs.yml").exists(), f"{block.where}: {argv}"
        elif "/" in program:    # a script of the project, e.g. benchmarks/gpu_check.sh
            assert (ROOT / program).is_file(), f"{block.where}: {program} does not exist"
        elif program not in EXTERNAL:
            pytest.fail(f"{block.where}: command {program!r} is not one these checks know; add a check for it "
                        f"(tests/test_docs.py) or name it in EXTERNAL")


def test_shell_checks_catch_what_they_claim():
    """The checks above reject a misspelt flag, an unknown model, a missing extra and a missing test file."""
    assert _commands("a --x 1 && FOO=1 b | c  # note\nd <<'EOF'\nprint(1)\nEOF\ne") == (
        [["a", "--x", "1"], ["FOO=1", "b"], ["c"], ["d"], ["e"]], ["print(1)\n"])
    with pytest.raises(AssertionError, match="no option --seedz"):
        _check_module_command("benchmarks.run", ["--seedz", "3"], "x")
    with pytest.raises(AssertionError, match="unregistered models"):
        _check_module_command("benchmarks.run", ["--models", "mhmf,no_such_model"], "x")
    with pytest.raises(AssertionError, match="does not exist"):
        _check_module_command("pytest", ["tests/test_no_such_file.py"], "x")
    assert "test" in _extras()
