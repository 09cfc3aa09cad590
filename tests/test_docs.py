"""The README and docs/ stay true to the command line: every `python -m bench ...` command in them parses, every
relative link resolves, and the README stays a five-minute read. Fast: no torch, no runs."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 250

FENCE = re.compile(r"^(```|~~~)([^\n`]*)\n(.*?)^\1[ \t]*$", re.M | re.S)
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
COMMAND = re.compile(r"(?:^|[\s/])python3? -m bench(?:\s|$)")
OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&", "2>", "2>&1", "(", ")"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _fenced_commands(text: str) -> list[str]:
    out = []
    for match in FENCE.finditer(text):
        if match.group(2).strip().lower() not in SHELL_LANGS:
            continue
        logical, pending = [], ""
        for line in match.group(3).splitlines():
            line = re.sub(r"^\s*\$\s+", "", line)  # a shell prompt
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            logical.append(pending + line)
            pending = ""
        if pending:
            logical.append(pending)
        out += [" ".join(line.split()) for line in logical if COMMAND.search(re.split(r"(?:^|\s)#", line)[0])]
    return out


def _inline_commands(text: str) -> list[str]:
    prose = FENCE.sub("", text)
    return [" ".join(m.group(1).split()) for m in INLINE.finditer(prose)
            if COMMAND.match(" ".join(m.group(1).split()))]


def commands(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return _fenced_commands(text) + _inline_commands(text)


def is_placeholder(command: str) -> bool:
    """Commands written with a placeholder (`<folder>`, `[more folders...]`, `...`) are examples, not commands."""
    return "..." in command or "…" in command or bool(re.search(r"<[^<>\s][^<>]*>", command))


def bench_argv(command: str) -> list[str] | None:
    """The arguments after `python -m bench`, cut at the first shell operator; None if no such command."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    for i in range(len(tokens) - 2):
        if tokens[i].rsplit("/", 1)[-1] in ("python", "python3") and tokens[i + 1:i + 3] == ["-m", "bench"]:
            argv = []
            for token in tokens[i + 3:]:
                if token in OPERATORS:
                    break
                argv.append(token)
            return argv
    return None


def _all_commands() -> list[tuple[str, str]]:
    return [(_rel(page), command) for page in PAGES for command in commands(page)]


def test_the_pages_hold_commands():
    found = _all_commands()
    assert sum(1 for page, _ in found if page == "README.md") >= 5, "the README shows the commands"
    assert len([c for _, c in found if not is_placeholder(c)]) >= 20


@pytest.mark.parametrize("page,command", _all_commands())
def test_every_bench_command_parses(page, command):
    if is_placeholder(command):
        pytest.skip(f"placeholder: {command}")
    argv = bench_argv(command)
    assert argv is not None, f"{page}: cannot find `python -m bench` in {command!r}"
    if not argv:
        pytest.skip(f"the program named, not a command: {command}")
    from bench.cli import build_parser
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and ("-h" in argv or "--help" in argv):
            return  # --help prints and exits 0
        pytest.fail(f"{page}: `{command}` does not parse (argparse exited {exc.code})")


def test_readme_is_a_five_minute_read():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}): move detail to docs/"


def _links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = INLINE.sub("", text)
    return LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_resolve(page):
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        file = unquote(target.split("#", 1)[0])
        if not (page.parent / file).exists():
            broken.append(target)
    assert not broken, f"{_rel(page)}: links to missing files: {broken}"


def test_readme_links_every_docs_page():
    readme = README.read_text(encoding="utf-8")
    top = [p for p in DOCS if p.parent.name in ("docs", "design") or p == ROOT / "docs" / "results" / "README.md"]
    missing = [_rel(p) for p in top if _rel(p) not in readme]
    assert not missing, f"README.md does not link {missing}"


def test_every_result_file_is_indexed():
    index = (ROOT / "docs" / "results" / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in (ROOT / "docs" / "results").glob("*.md") if p.name != "README.md" and p.name not in index]
    assert not missing, f"docs/results/README.md does not list {missing}"


def test_bench_cli_imports_no_torch():
    code = "import sys, bench.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"`import bench.cli` imported torch (or failed): {done.stderr[-2000:]}"


def test_the_extractor():
    text = "x `python -m bench run\n--suite nlp` y\n```bash\npython -m bench list  # all\nA=1 python -m bench compare \\\n" \
           "  --baseline previous --markdown > out.md\n```\n"
    assert commands_in(text) == ["python -m bench list # all",
                                 "A=1 python -m bench compare --baseline previous --markdown > out.md",
                                 "python -m bench run --suite nlp"]
    assert bench_argv("A=1 python -m bench compare --baseline previous --markdown > out.md") == \
        ["compare", "--baseline", "previous", "--markdown"]
    assert bench_argv("python -m bench list  # all") == ["list"]
    assert bench_argv('python -m bench run --suite nlp --out "runs/n-$(date +%F)"') == \
        ["run", "--suite", "nlp", "--out", "runs/n-$(date +%F)"]
    assert is_placeholder("python -m bench report runs/<folder>") and is_placeholder("python -m bench report a [b...]")
    assert not is_placeholder("python -m bench run --suite nlp")
    assert commands_in("`python -m bench.execute.worker` and `python -m bench list`") == ["python -m bench list"]


def commands_in(text: str) -> list[str]:
    return _fenced_commands(text) + _inline_commands(text)
