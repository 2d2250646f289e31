"""Runs every ```python block of the documentation, so the docs cannot rot.

Each page's blocks run in order in one namespace (a page reads like one script), in a
temporary working directory (files the snippets write, e.g. `runs/...`, land there).
Blocks that must not run use another fence language (```bash, ```text, ```kotlin, ...;
```py for Python that runs elsewhere, e.g. on a Coral device: highlighted, never executed);
`test_fences_use_known_languages` keeps a typo such as ```py from silently skipping a block.
The snippets themselves keep the runs short (2,000-image subsets, 1-3 epochs), and say so.

What a block prints is shown to the reader in the ```text title="Output" block right after
it. The test compares each block's printed lines with that block: the text must be the
same, the numbers may differ (they are masked: another backend or library version moves
the last digits), so a renamed key or a changed message fails the test. After changing a
page, rewrite its output blocks from a real run (TensorFlow backend, as in `make test`)::

    KERAS_BACKEND=tensorflow .venv/bin/python tests/test_docs.py --update docs/quickstart.md
"""

import contextlib
import io
import os
import re
import sys
import tempfile
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


def _language(info):
    return info.split(" ")[0].lstrip(".").lower()


def fenced_blocks(text):
    """Yields (language, first line number of the code, code) for each fenced block."""
    for info, lineno, code, _ in _fence_spans(text):
        yield _language(info), lineno, code


OUTPUT_INFO = 'text title="Output"'
# A number, unless it is part of a name (units_0, float32, int8 stay as they are).
_NUMBER = re.compile(r"(?<![A-Za-z_\d])[-+]?(?:\d[\d,_]*)?\.?\d+(?:[eE][-+]?\d+)?")


def blocks_with_outputs(text):
    """Yields (first line, code, shown output or None, (start, end) of the output block or None).

    One item per ```python block; the shown output is the ```text title="Output" block
    that follows it with only blank lines between.
    """
    blocks = list(_fence_spans(text))
    for i, (info, lineno, code, span) in enumerate(blocks):
        if _language(info) != RUN_LANGUAGE:
            continue
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        if nxt and nxt[0] == OUTPUT_INFO and not text[span[1]:nxt[3][0]].strip():
            yield lineno, code, nxt[2], nxt[3]
        else:
            yield lineno, code, None, None


def _fence_spans(text):
    """(info string, first code line, code, (start, end) of the whole block) for every fence."""
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
        yield start.group("info").strip(), text.count("\n", 0, start.end()) + 2, textwrap.dedent(body), \
            (start.start(), end.end())
        pos = end.end()


def mask_numbers(output):
    """The lines of `output` with every number replaced by `#` and runs of spaces by one."""
    return [" ".join(_NUMBER.sub("#", line).split()) for line in output.strip("\n").splitlines()]


def run_page(page, namespace=None):
    """Runs the ```python blocks of `page` in order in one namespace (in the current directory).

    Returns:
        A list of (first line, printed output, shown output or None, span of the shown block).
    """
    namespace = {"__name__": "__docs__"} if namespace is None else namespace
    text = page.read_text()
    results = []
    for lineno, code, shown, span in blocks_with_outputs(text):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            # Pad so that tracebacks point at the line of the .md file.
            exec(compile("\n" * (lineno - 1) + code, str(page), "exec"), namespace)  # noqa: S102
        results.append((lineno, printed.getvalue(), shown, span))
    return results


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


def test_code_that_is_not_run_says_so():
    """A ```py block looks like code the docs run; its title must say that it is not."""
    for page in _pages():
        for info, lineno, _, _ in _fence_spans(page.read_text()):
            if _language(info) == "py":
                assert 'title="Not run here: ' in info, (
                    f"{page.relative_to(DOCS)}:{lineno}: a ```py block that is not run needs "
                    'title="Not run here: <why>" (or make it ```python, which the docs test runs)')


def test_tutorials_and_quickstart_have_snippets():
    names = {p.relative_to(DOCS).as_posix() for p in python_pages()}
    for page in ("quickstart.md", "tutorials/memory-budget.md", "tutorials/export.md",
                 "tutorials/on-device-retraining.md", "tutorials/modern-cnns.md"):
        assert page in names, f"{page} has no ```python block to test"


@pytest.mark.parametrize("page", python_pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_snippets_run(page, tmp_path, monkeypatch, fashion_available):
    import keras

    monkeypatch.chdir(tmp_path)
    keras.backend.clear_session()
    where = page.relative_to(DOCS).as_posix()
    for lineno, printed, shown, _ in run_page(page):
        if shown is None:
            assert not printed.strip(), (
                f"{where}:{lineno}: the block prints but the page shows no output; run "
                f"`python tests/test_docs.py --update docs/{where}`.\nIt printed:\n{printed}")
            continue
        assert mask_numbers(printed) == mask_numbers(shown), (
            f"{where}:{lineno}: the output shown on the page is not what the block prints "
            f"(numbers aside); run `python tests/test_docs.py --update docs/{where}`.\n"
            f"Printed:\n{printed}\nShown:\n{shown}")


def test_mask_numbers_keeps_the_text():
    assert mask_numbers("error 12.34 % at [784, 300], 1,066,440 B, 1e-05\n") == ["error # % at [#, #], # B, #"]
    assert mask_numbers("units_0: 10") != mask_numbers("units_1: 10")  # names with digits stay apart
    assert mask_numbers("a  b") == mask_numbers("a b")


def test_blocks_with_outputs_pairs_a_block_with_the_output_after_it():
    text = ("```python\nprint(1)\n```\n\n```text title=\"Output\"\n1\n```\n"
            "text between\n```python\nx = 1\n```\nsome prose\n```text title=\"Output\"\n2\n```\n")
    pairs = list(blocks_with_outputs(text))
    assert [(code, shown) for _, code, shown, _ in pairs] == [("print(1)\n", "1\n"), ("x = 1\n", None)]


def update_outputs(page):
    """Runs `page` and rewrites its output blocks with what each ```python block printed."""
    page = Path(page).resolve()
    text = page.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            results = run_page(page)
        finally:
            os.chdir(cwd)
    spans = {lineno: span for lineno, _, _, span in blocks_with_outputs(text)}
    ends = {lineno: _block_end(text, lineno) for lineno in spans}
    for lineno, printed, _, span in sorted(results, key=lambda r: -r[0]):  # from the end: offsets hold
        block = f'```{OUTPUT_INFO}\n{printed.rstrip()}\n```' if printed.strip() else ""
        if span is not None:
            start, end = span
            if not block:  # drop the blank lines before the removed block too
                start = ends[lineno]
        else:
            start = end = ends[lineno]
            block = f"\n\n{block}" if block else ""
        text = text[:start] + block + text[end:]
    page.write_text(text)


def _block_end(text, lineno):
    for info, first, _, (_, end) in _fence_spans(text):
        if first == lineno:
            return end
    raise ValueError(f"no block at line {lineno}")


def python_pages_list():  # for --update without arguments
    return python_pages()


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
        argv = shlex.split(line)[1:]
        try:
            args = cli.parse_args(parser, argv)
            if args.command == "sweep":  # its train flags: every configuration parses as a train command
                from keras_dynhp.cli import sweep

                own, rest = sweep._sweep_parser().parse_known_args(argv[argv.index("sweep") + 1:])
                for _, train_argv in sweep.grid(rest, [0]):
                    cli.build_parser(command="train").parse_args(train_argv)
        except SystemExit as e:  # argparse's way of reporting an error
            pytest.fail(f"{where}: `{line}` does not parse (exit {e.code})")


MAX_CODE_LINE = 82  # what fits in the content column of a 1280-px-wide window


def test_code_lines_fit_the_page():
    # Output blocks show what the code printed as it is; the stylesheet wraps their long lines.
    long_lines = [
        f"{page.relative_to(DOCS).as_posix()}:{lineno + i}: {len(line)} characters"
        for page in _pages()
        for info, lineno, code, _ in _fence_spans(page.read_text())
        if info != OUTPUT_INFO
        for i, line in enumerate(code.splitlines())
        if len(line) > MAX_CODE_LINE
    ]
    assert not long_lines, f"code lines over {MAX_CODE_LINE} characters scroll sideways:\n" + "\n".join(long_lines)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Rewrite the output blocks of documentation pages.")
    parser.add_argument("--update", nargs="*", metavar="PAGE", help="pages to run and rewrite (default: all)")
    arguments = parser.parse_args()
    for path in arguments.update or python_pages_list():
        print(f"updating {path}", file=sys.stderr)
        update_outputs(path)
