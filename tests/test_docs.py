"""Runs every ```python block of the documentation, so the docs cannot rot.

Each page's blocks run in order in one namespace (a page reads like one script), in a
temporary working directory (files the snippets write, e.g. `runs/...`, land there).
Blocks that must not run use another fence language (```bash, ```text, ```kotlin, ...;
```py for Python that runs elsewhere, e.g. on a Coral device: highlighted, never executed);
`test_fences_use_known_languages` keeps a typo such as ```py from silently skipping a block.
The snippets themselves keep the runs short (2,000-image subsets, 1-3 epochs), and say so.
"""

import os
import re
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})(?P<info>[^\n`]*)$", re.MULTILINE)
RUN_LANGUAGE = "python"
# Fence languages that are shown but never executed.
SHOWN_LANGUAGES = {"bash", "console", "text", "kotlin", "java", "json", "yaml", "toml", "csv", "pycon", "py"}


def _pages():
    return sorted(p for p in DOCS.rglob("*.md") if "api" not in p.relative_to(DOCS).parts)


def fenced_blocks(text):
    """Yields (language, first line number of the code, code) for each fenced block."""
    pos = 0
    while True:
        start = FENCE.search(text, pos)
        if not start:
            return
        indent, ticks = start.group("indent"), start.group("ticks")
        closing = re.compile(rf"^{re.escape(indent)}{re.escape(ticks[0])}{{{len(ticks)},}}[ \t]*$", re.MULTILINE)
        end = closing.search(text, start.end())
        if not end:
            raise ValueError(f"unclosed code fence at line {text.count(chr(10), 0, start.start()) + 1}")
        body = text[start.end() + 1 : end.start()]
        language = start.group("info").strip().split(" ")[0].lstrip(".").lower()
        lineno = text.count("\n", 0, start.end()) + 2
        yield language, lineno, textwrap.dedent(body)
        pos = end.end()


def python_pages():
    return [p for p in _pages() if any(lang == RUN_LANGUAGE for lang, _, _ in fenced_blocks(p.read_text()))]


@pytest.fixture(scope="module")
def fashion_available():
    from keras_dynhp.experiments import datasets

    try:
        datasets.load_data("fashion_mnist")
    except datasets.DataNotFoundError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Fashion-MNIST is missing on CI: {e}")
        pytest.skip(f"Fashion-MNIST not available: {e}")


def test_fences_use_known_languages():
    for page in _pages():
        for language, lineno, _ in fenced_blocks(page.read_text()):
            assert language in SHOWN_LANGUAGES | {RUN_LANGUAGE}, (
                f"{page.relative_to(DOCS)}:{lineno}: fence language {language!r} is neither run "
                f"({RUN_LANGUAGE!r}) nor one of the shown-only languages {sorted(SHOWN_LANGUAGES)}"
            )


def test_tutorials_and_quickstart_have_snippets():
    names = {p.relative_to(DOCS).as_posix() for p in python_pages()}
    for page in ("quickstart.md", "tutorials/memory-budget.md", "tutorials/export.md",
                 "tutorials/on-device-retraining.md"):
        assert page in names, f"{page} has no ```python block to test"


@pytest.mark.parametrize("page", python_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_snippets_run(page, tmp_path, monkeypatch, fashion_available):
    import keras

    monkeypatch.chdir(tmp_path)
    keras.backend.clear_session()
    namespace = {"__name__": "__docs__"}
    text = page.read_text()
    for language, lineno, code in fenced_blocks(text):
        if language != RUN_LANGUAGE:
            continue
        # Pad so that tracebacks point at the line of the .md file.
        exec(compile("\n" * (lineno - 1) + code, str(page), "exec"), namespace)  # noqa: S102


def _cli_commands():
    """`keras-dynhp ...` command lines of the ```bash blocks, continuation lines joined."""
    commands = []
    for page in _pages():
        for language, lineno, code in fenced_blocks(page.read_text()):
            if language != "bash":
                continue
            for line in code.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith("keras-dynhp "):
                    commands.append((f"{page.relative_to(DOCS).as_posix()}:{lineno}", line))
    return commands


def test_cli_commands_in_docs_parse():
    import shlex

    from keras_dynhp import cli

    commands = _cli_commands()
    assert commands, "the docs show no keras-dynhp command"
    parser = cli.build_parser()
    for where, line in commands:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit as e:  # argparse's way of reporting an error
            pytest.fail(f"{where}: `{line}` does not parse (exit {e.code})")


MAX_CODE_LINE = 82  # what fits in the content column of a 1280-px-wide window


def test_code_lines_fit_the_page():
    long_lines = [
        f"{page.relative_to(DOCS).as_posix()}:{lineno + i}: {len(line)} characters"
        for page in _pages()
        for _, lineno, code in fenced_blocks(page.read_text())
        for i, line in enumerate(code.splitlines())
        if len(line) > MAX_CODE_LINE
    ]
    assert not long_lines, f"code lines over {MAX_CODE_LINE} characters scroll sideways:\n" + "\n".join(long_lines)
