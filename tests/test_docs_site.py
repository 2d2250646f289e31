"""The documentation site: `mkdocs build --strict` passes, works offline, renders.

`test_mkdocs_build_strict` builds the site the way CI does (any warning fails: broken
links or cross-references, docstring problems, missing pages) and checks the output: every
page of the nav exists, nothing is loaded from the network (no web fonts, no CDN scripts),
the maths is typeset as MathML and the API pages hold the rendered docstrings.

`test_screenshots` renders the home page and a tutorial with headless Chromium (skipped
when no Chromium is installed, e.g. `apt-get install chromium`) and checks the PNGs are
not blank. To look at them yourself::

    python tests/test_docs_site.py --out build/screenshots

(or set KERAS_DYNHP_SCREENSHOT_DIR when running pytest).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT_PAGES = {"home": "index.html", "tutorial": "tutorials/memory-budget.html"}
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


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Build the docs and screenshot two pages.")
    parser.add_argument("--out", default="build/screenshots", help="directory of the PNGs")
    parser.add_argument("--site-dir", default="build/site")
    args = parser.parse_args(argv)
    result = build_site(ROOT / args.site_dir)
    sys.stdout.write(result.stdout + result.stderr)
    if result.returncode:
        return result.returncode
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    for name, page in SCREENSHOT_PAGES.items():
        print(screenshot(chromium, ROOT / args.site_dir / page, Path(args.out) / f"{name}.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
