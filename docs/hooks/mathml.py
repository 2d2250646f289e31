"""MkDocs hook: typesets the pages' maths as MathML at build time (no JavaScript, no CDN).

`pymdownx.arithmatex` (generic mode) wraps `$...$` and `$$...$$` in
`<span class="arithmatex">\\(...\\)</span>` / `<div class="arithmatex">\\[...\\]</div>`;
this hook replaces their TeX with MathML from `latex2mathml`, which browsers render
natively, so the site reads correctly offline. Without `latex2mathml` (the `docs`
extra installs it) the TeX is left as text and a warning fails `mkdocs build --strict`.
"""

import html
import logging
import re

log = logging.getLogger("mkdocs.hooks.mathml")

_BLOCK = re.compile(r'<div class="arithmatex">\s*\\\[(.*?)\\\]\s*</div>', re.DOTALL)
_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.DOTALL)

try:
    from latex2mathml.converter import convert as _convert
except ImportError:  # pragma: no cover - reported at build time
    _convert = None


def _replace(display):
    def sub(match):
        tex = html.unescape(match.group(1)).strip()
        mathml = _convert(tex, display=display)
        if display == "block":
            return f'<div class="arithmatex">{mathml}</div>'
        return f'<span class="arithmatex">{mathml}</span>'

    return sub


def on_page_content(html_text, page, config, files):
    if 'class="arithmatex"' not in html_text:
        return html_text
    if _convert is None:
        log.warning("latex2mathml is not installed (pip install -e '.[docs]'): maths in %s "
                    "is shown as TeX source", page.file.src_uri)
        return html_text
    html_text = _BLOCK.sub(_replace("block"), html_text)
    return _INLINE.sub(_replace("inline"), html_text)
