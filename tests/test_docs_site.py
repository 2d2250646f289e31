"""The documentation site: `mkdocs build --strict` passes, works offline, renders.

`test_mkdocs_build_strict` builds the site the way CI does (any warning fails: broken
links or cross-references, docstring problems, missing pages) and checks the output: every
page of the nav exists, nothing is loaded from the network (no web fonts, no CDN scripts),
the maths is typeset as MathML and the API pages hold the rendered docstrings.

`test_screenshots` renders the home page, a tutorial, the reproduction and the benchmarks
page (`SCREENSHOT_PAGES`) with headless Chromium (skipped when no Chromium is installed,
e.g. `apt-get install chromium`) and checks the PNGs are not blank. To look at them yourself::

    python tests/test_docs_site.py --out build/screenshots

(or set KERAS_DYNHP_SCREENSHOT_DIR when running pytest).

`test_nothing_overflows_the_column` loads every page of the built site in headless Chromium
at a 1280-px-wide window and fails if a table, a code block, an image or a displayed
equation is wider than the article column (a table or block that needs a horizontal
scrollbar counts as not fitting). Long signatures on the API pages scroll by design and are
only reported. `test_overflow_detector` checks the detector itself on a synthetic page, so
that the site check cannot silently pass. To list what overflows::

    python tests/test_docs_site.py --overflow
"""

import concurrent.futures
import html as html_lib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT_PAGES = {
    "home": "index.html",
    "tutorial": "tutorials/memory-budget.html",
    "reproduction": "reproduction.html",
    "benchmarks": "benchmarks.html",
}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Anything fetched from another host when a page loads (links to other sites are fine).
_REMOTE_RESOURCE = re.compile(
    r"""<(?:script|img|iframe)\b[^>]*\bsrc=["']https?://|<link\b[^>]*\bhref=["']https?://[^>]*>"""
    r"""|@import\s+url\(["']?https?://|fonts\.googleapis|fonts\.gstatic|cdn\.jsdelivr|unpkg\.com""",
    re.IGNORECASE,
)


def build_site(site_dir):
    """Runs `mkdocs build --strict` into `site_dir`; returns the CompletedProcess."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )


def _nav_pages():
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    # mkdocs.yml may hold !!python/name tags; they do not matter here.
    _Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)

    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from walk(value)
            else:
                yield value

    return list(walk(config["nav"]))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is not installed on CI: `make install` installs the `docs` extra")
        pytest.skip("mkdocs not installed (pip install -e '.[docs]')")
    site_dir = tmp_path_factory.mktemp("docs") / "site"
    result = build_site(site_dir)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return site_dir


def test_mkdocs_build_strict(site):
    html_pages = {}
    for page in _nav_pages():
        html = site / re.sub(r"\.md$", ".html", page)
        assert html.is_file(), f"{page} of the nav was not built"
        html_pages[page] = html.read_text()
    for path in site.rglob("*.html"):
        text = path.read_text()
        match = _REMOTE_RESOURCE.search(text)
        assert not match, f"{path.relative_to(site)} loads a remote resource: {match.group(0)!r}"
    for path in site.rglob("*.css"):
        assert not _REMOTE_RESOURCE.search(path.read_text()), f"{path.relative_to(site)} imports a remote resource"
    concepts = html_pages["concepts.md"]
    assert concepts.count("<math") > 10, "the Concepts maths was not typeset as MathML"
    assert "\\frac" not in concepts and "\\sigma" not in concepts, "raw TeX left in the Concepts page"
    models = html_pages["api/models.md"]
    assert 'id="keras_dynhp.models.DynHPModel.fit"' in models
    assert "memory_budget" in models
    for page, text in html_pages.items():
        if page.startswith("api/"):
            assert 'class="doc doc-object' in text, f"{page} has no rendered API object"
            assert ":class:`" not in text and ":func:`" not in text, f"{page} shows raw Sphinx roles"


def find_chromium():
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(chromium, html, png, width=1280, height=1600):
    """Renders `html` (a file) to `png` with headless Chromium."""
    subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
         f"--window-size={width},{height}", f"--screenshot={png}", Path(html).resolve().as_uri()],
        check=True, capture_output=True, timeout=180,
    )
    return png


def _ink_fraction(png):
    """Fraction of pixels that are not (near) white, or None without matplotlib."""
    try:
        import matplotlib.image
    except ImportError:
        return None
    pixels = matplotlib.image.imread(png)[..., :3]
    return float((pixels.min(axis=-1) < 0.9).mean())


def test_screenshots(site, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium to render the site with (apt-get install chromium)")
    out = Path(os.environ.get("KERAS_DYNHP_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    for name, page in SCREENSHOT_PAGES.items():
        png = screenshot(chromium, site / page, out / f"{name}.png")
        assert png.stat().st_size > 20_000, f"{png} is suspiciously small"
        ink = _ink_fraction(png)
        if ink is not None:
            assert 0.02 < ink < 0.6, f"{png}: {ink:.1%} of the pixels are ink; blank or broken page?"


# Injected into a copy of each page: once the page (and Material's script, which wraps tables
# in div.md-typeset__scrollwrap) has run, measures every table, code block, image and
# displayed equation of the article column against the column's content box, and writes
# the findings as JSON into <pre id="overflow-report">, read back from Chromium's --dump-dom.
_OVERFLOW_SCRIPT = r"""<script>
window.addEventListener("load", function () { setTimeout(function () {
  var column = document.querySelector(".md-content__inner") || document.body;
  var style = getComputedStyle(column), box = column.getBoundingClientRect();
  var left = box.left + parseFloat(style.paddingLeft);
  var right = box.right - parseFloat(style.paddingRight);
  var found = [];
  function name(el) {
    var text = (el.getAttribute("alt") || el.getAttribute("src") || el.textContent || "");
    return el.tagName.toLowerCase() + ": " + text.replace(/\s+/g, " ").trim().slice(0, 70);
  }
  function scrolls(el) { return el && el.scrollWidth > el.clientWidth + 1; }
  function check(kind, el, scrollers) {
    var why = [], r = el.getBoundingClientRect();
    scrollers.forEach(function (s) {
      if (scrolls(s)) why.push(s.tagName.toLowerCase() + (s.className ? "." + s.className.split(" ")[0] : "")
                               + " scrolls (" + s.scrollWidth + " > " + s.clientWidth + " px)");
    });
    if (r.width > 0 && (r.right > right + 1 || r.left < left - 1))
      why.push("box " + Math.round(r.left) + "-" + Math.round(r.right) + " px outside the column "
               + Math.round(left) + "-" + Math.round(right) + " px");
    if (why.length) found.push({kind: kind, element: name(el), why: why.join("; "),
                                signature: !!el.closest(".doc-signature")});
  }
  column.querySelectorAll("table").forEach(function (t) {
    check("table", t, [t, t.closest(".md-typeset__scrollwrap"), t.closest(".md-typeset__table")]);
  });
  column.querySelectorAll("pre").forEach(function (p) {
    check("code", p, [p, p.querySelector(":scope > code")]);
  });
  column.querySelectorAll("img").forEach(function (i) { check("image", i, []); });
  column.querySelectorAll(".arithmatex, math[display=block]").forEach(function (m) {
    check("math", m, [m]);
  });
  var page = document.documentElement;
  var report = {viewport: window.innerWidth, column: [Math.round(left), Math.round(right)],
                page_scrolls: page.scrollWidth > page.clientWidth + 1, overflows: found};
  var out = document.createElement("pre");
  out.id = "overflow-report";
  out.hidden = true;
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
}, 300); });
</script>"""
_REPORT = re.compile(r'<pre id="overflow-report"[^>]*>(.*?)</pre>', re.DOTALL)


def measure_overflow(chromium, html, width=1280, height=1600):
    """Loads `html` (a file, modified in place) in headless Chromium; returns the report.

    The report is a dict: `viewport` (px), `column` (the article column's left and right
    edge), `page_scrolls` (the whole page scrolls sideways) and `overflows`, a list of
    {kind: table|code|image|math, element, why, signature (inside an API signature)}.
    """
    html = Path(html)
    text = html.read_text()
    text = text.replace("</body>", _OVERFLOW_SCRIPT + "</body>", 1) if "</body>" in text else text + _OVERFLOW_SCRIPT
    html.write_text(text)
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000",
             f"--window-size={width},{height}", "--dump-dom", html.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )
    match = _REPORT.search(result.stdout)
    if not match:
        raise RuntimeError(f"no overflow report from Chromium for {html} (rc {result.returncode}):\n"
                           f"{result.stderr[-2000:]}")
    return json.loads(html_lib.unescape(match.group(1)))


def site_overflows(chromium, site_dir, width=1280):
    """Measures every html page of `site_dir` (on a copy); returns {page: report}."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "site"
        shutil.copytree(site_dir, copy)
        pages = sorted(str(p.relative_to(copy)) for p in copy.rglob("*.html"))
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
            reports = pool.map(lambda page: measure_overflow(chromium, copy / page, width=width), pages)
            return dict(zip(pages, reports))


def overflow_problems(reports):
    """(failures, api_signatures): human-readable lines; signatures on API pages scroll by design."""
    failures, signatures = [], []
    for page, report in reports.items():
        if report["page_scrolls"]:
            failures.append(f"{page}: the page scrolls sideways at {report['viewport']} px")
        for item in report["overflows"]:
            line = f"{page}: {item['kind']} {item['element']!r}: {item['why']}"
            (signatures if page.startswith("api/") and item["signature"] else failures).append(line)
    return failures, signatures


_SYNTHETIC_PAGE = """<!doctype html><html><head><style>
body { margin: 0; } .md-content__inner { width: 600px; margin-left: 100px; }
.md-typeset__scrollwrap { overflow-x: auto; } table, td { border: 1px solid; }
pre { overflow-x: auto; } .md-typeset__scrollwrap.fits { margin: 0 -20px; padding: 0 20px; }
</style></head><body><article class="md-content__inner">
<p>Text that fits.</p>
<div class="md-typeset__scrollwrap fits"><div class="md-typeset__table"><table id="fits">
<tr><td>small</td><td>table</td></tr></table></div></div>
<div class="md-typeset__scrollwrap"><div class="md-typeset__table"><table id="wide">
<tr><td style="min-width: 3000px">WIDE_TABLE</td></tr></table></div></div>
<table><tr><td style="min-width: 900px">BARE_TABLE</td></tr></table>
<pre><code>short code</code></pre>
<pre><code>LONG_CODE """ + "x" * 400 + """</code></pre>
<div class="doc-signature highlight"><pre><code>SIGNATURE(""" + "x, " * 150 + """)</code></pre></div>
<img alt="SMALL_IMAGE" width="300" height="10" src="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E">
<img alt="WIDE_IMAGE" width="2000" height="10" src="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E">
</article></body></html>
"""


def test_overflow_detector(tmp_path):
    """The detector finds a 3000-px table (scrolling), a bare wide table, a long code line, a
    long signature and a wide image on a synthetic page, and nothing that fits."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium to render pages with (apt-get install chromium)")
    page = tmp_path / "synthetic.html"
    page.write_text(_SYNTHETIC_PAGE)
    report = measure_overflow(chromium, page)
    assert report["viewport"] == 1280
    assert report["column"] == [100, 700]
    found = {item["element"].split(": ", 1)[1].split()[0]: item for item in report["overflows"]}
    assert set(found) == {"WIDE_TABLE", "BARE_TABLE", "LONG_CODE", "SIGNATURE(x,", "WIDE_IMAGE"}, report
    assert "md-typeset__scrollwrap scrolls" in found["WIDE_TABLE"]["why"]
    assert "outside the column" in found["WIDE_IMAGE"]["why"]
    assert found["SIGNATURE(x,"]["signature"] and not found["LONG_CODE"]["signature"]
    assert report["page_scrolls"]
    failures, signatures = overflow_problems({"synthetic.html": report})
    assert len(failures) == 6 and not signatures
    # On an API page a long signature is only reported.
    failures, signatures = overflow_problems({"api/synthetic.html": report})
    assert len(failures) == 5 and len(signatures) == 1 and "SIGNATURE" in signatures[0]


def test_nothing_overflows_the_column(site):
    """Every page at 1280 px: tables, code, images and equations fit the article column."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium to render the site with (apt-get install chromium)")
    reports = site_overflows(chromium, site)
    assert "reproduction.html" in reports and "benchmarks.html" in reports
    failures, signatures = overflow_problems(reports)
    for line in signatures:
        print("API signature scrolls (allowed):", line)
    assert not failures, "content wider than the column at 1280 px:\n" + "\n".join(failures)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Build the docs and screenshot a few pages.")
    parser.add_argument("--out", default="build/screenshots", help="directory of the PNGs")
    parser.add_argument("--site-dir", default="build/site")
    parser.add_argument("--overflow", action="store_true",
                        help="instead of screenshots, list what is wider than the column on every page")
    args = parser.parse_args(argv)
    result = build_site(ROOT / args.site_dir)
    sys.stdout.write(result.stdout + result.stderr)
    if result.returncode:
        return result.returncode
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 1
    if args.overflow:
        failures, signatures = overflow_problems(site_overflows(chromium, ROOT / args.site_dir))
        for line in signatures:
            print("allowed (API signature):", line)
        for line in failures:
            print("OVERFLOW:", line)
        return 1 if failures else 0
    os.makedirs(args.out, exist_ok=True)
    for name, page in SCREENSHOT_PAGES.items():
        print(screenshot(chromium, ROOT / args.site_dir / page, Path(args.out) / f"{name}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
