"""Griffe extension: makes the package's docstrings render well in the API reference.

Four rewrites, at documentation time only (the source is untouched):

* `#:` comment lines right above a module or class attribute (Sphinx's convention for
  documenting constants, e.g. `#: The keys of every result record.`) become that
  attribute's docstring; Griffe reads only string literals placed after an assignment;
* an `Example:` section title becomes `Examples:`, the only spelling Griffe's Google
  parser reads as doctest examples (otherwise `>>>` lines render as Markdown quotes);
* reST literal blocks (a paragraph ending in `::`, then an indented block) become fenced
  code blocks; Markdown would otherwise fold them into the paragraph or a list item;
* Sphinx roles become cross-references (below).

The package's docstrings use `:class:`L0Dense``, `:func:`~keras_dynhp.memory.mo_bytes``,
`:mod:`keras_dynhp.surgery``... (readable in `help()`). For the API reference each role
becomes a link to the documented object when the name resolves, in the docstring's own
scope, to a public object of the package, and an inline code span otherwise.
"""

import re
from pathlib import Path

import griffe

_EXAMPLE = re.compile(r"^([ \t]*)Example:[ \t]*$", re.MULTILINE)
_COMMENT = re.compile(r"^[ \t]*#:[ \t]?(.*)$")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|obj|data|const):`(~?)([^`<>]+)`")


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def literal_blocks_to_fences(text):
    """Turns reST `text::` + indented block into `text:` + a fenced code block."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if not line.rstrip().endswith("::") or j >= len(lines) or _indent(lines[j]) <= _indent(line):
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        head = line.rstrip()[:-2].rstrip()
        if head.strip():
            out.append(head + ":")
        stripped = line.lstrip(" ")
        fence_indent = base + (2 if stripped[:2] in ("* ", "- ") else 0)
        block_end = j
        while block_end < len(lines) and (not lines[block_end].strip() or _indent(lines[block_end]) > base):
            block_end += 1
        block = lines[j:block_end]
        while block and not block[-1].strip():
            block.pop()
        cut = min(_indent(b) for b in block if b.strip())
        pad = " " * fence_indent
        out.append("")
        out.append(pad + "```text")
        out.extend(pad + b[cut:] if b.strip() else "" for b in block)
        out.append(pad + "```")
        out.append("")
        i = block_end
    return "\n".join(out)


def comment_docstring(lines, lineno):
    """The text of the `#:` comment lines right above line `lineno` (1-based), or None."""
    found, i = [], lineno - 2
    while i >= 0 and (match := _COMMENT.match(lines[i])):
        found.insert(0, match.group(1).rstrip())
        i -= 1
    return "\n".join(found) or None


def _walk(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class DocstringMarkup(griffe.Extension):
    """Normalises `Example:` titles, reST literal blocks and Sphinx roles."""

    def on_package(self, *, pkg, loader, **kwargs):
        collection = loader.modules_collection
        sources = {}
        for obj in _walk(pkg):
            if obj.docstring is None and obj.is_attribute and obj.lineno and isinstance(obj.filepath, Path):
                if obj.filepath not in sources:
                    sources[obj.filepath] = obj.filepath.read_text(encoding="utf-8").splitlines()
                text = comment_docstring(sources[obj.filepath], obj.lineno)
                if text:
                    obj.docstring = griffe.Docstring(
                        text, lineno=obj.lineno - 1, parent=obj, parser=loader.docstring_parser,
                        parser_options=loader.docstring_options)
            if obj.docstring is None:
                continue
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            if "::" in obj.docstring.value:
                obj.docstring.value = literal_blocks_to_fences(obj.docstring.value)
            if ":`" in obj.docstring.value:
                obj.docstring.value = _ROLE.sub(
                    lambda m, obj=obj: self._reference(obj, m.group(1), m.group(2), collection),
                    obj.docstring.value,
                )

    @staticmethod
    def _reference(obj, tilde, target, collection):
        title = target.rsplit(".", 1)[-1] if tilde else target
        path = _resolve(obj, target)
        if path is None or any(part.startswith("_") for part in path.split(".")):
            return f"`{title}`"
        try:
            target_obj = collection[path]
            if target_obj.is_alias:  # e.g. keras_dynhp.strip -> keras_dynhp.export.strip
                path = target_obj.final_target.path
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return f"`{title}`"
        if not path.startswith(obj.package.name + ".") or any(p.startswith("_") for p in path.split(".")):
            return f"`{title}`"
        return f"[`{title}`][{path}]"


def _resolve(obj, target):
    root = obj.package.name
    if target == root or target.startswith(root + "."):
        return target
    head, _, rest = target.partition(".")
    try:
        path = obj.resolve(head)
    except griffe.NameResolutionError:
        return None
    return f"{path}.{rest}" if rest else path
