"""The course site (tutorials/build_site.py): executed notebooks as HTML pages with their outputs.

One site is built for the module from two notebooks: a tiny synthetic lesson written here (math,
a solution cell, PNG, JPEG and SVG outputs: fast, and stable whatever the tutorials' authors
change) and the real tutorial 01. The checks read the HTML: every image output became an <img>,
the math markup is there, prev/next/source/notebook links resolve. A notebook with a failing cell
fails the build, by the command line, with one message naming the notebook and the cell. The
browser test opens the pages in headless Chromium (Debian's chromium and chromium-driver, with
selenium) and skips with the reason when they are absent.

Needs the [site] extra (nbconvert, selenium) and the [test] extra (jupytext, nbclient, ipykernel).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from notebook_harness import load_tutorial_module

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
BUILDER = TUTORIALS / "build_site.py"
REAL = "01_patches"  # the real tutorial built with the synthetic one

for _name in ("nbconvert", "jupytext", "nbclient", "nbformat", "ipykernel"):
    pytest.importorskip(_name, reason=f"the site needs {_name}: pip install -e '.[test,site]'")


build_site = load_tutorial_module("build_site")

SYNTHETIC = r'''# %% [markdown]
# # 00 · A synthetic lesson
#
# **Goal.** Show inline math, $e^{i\pi} + 1 = 0$, display math and three figures, and prove:
#
# 1. the page shows every figure;
# 2. the page keeps the math.
#
# $$\mathrm{softmax}\left(\frac{q k^\top}{\sqrt{d}}\right) v$$
#
# ## A section

# %%
import io

from IPython.display import SVG, Image, display
from PIL import Image as PILImage


def picture(fmt, color):
    buffer = io.BytesIO()
    PILImage.new("RGB", (48, 32), color).save(buffer, format=fmt)
    return Image(data=buffer.getvalue(), format=fmt.lower())


display(picture("PNG", (200, 30, 30)))
print("a stream output")

# %% tags=["solution"]
answer = 6 * 7

# %%
assert answer == 42
display(picture("JPEG", (30, 30, 200)))
SVG('<svg xmlns="http://www.w3.org/2000/svg" width="60" height="24"><rect width="60" height="24" fill="green"/></svg>')
'''

BROKEN = '''# %% [markdown]
# # 02 · Broken
#
# **Goal.** Fail at the third cell.

# %%
x = 1

# %%
assert x == 2, "x should be 2"

# %%
print("never reached")
'''


class _Page(HTMLParser):
    """The parts of a page the tests read: <img> (with the classes of the enclosing element),
    <a> with their attributes, <script src>, <link href>."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.links, self.scripts, self.stylesheets, self._stack = [], [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs.get("src", ""), " ".join(self._stack)))
        elif tag == "a":
            self.links.append(attrs)
        elif tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        elif tag == "link" and attrs.get("href"):
            self.stylesheets.append(attrs["href"])
        if tag == "div":
            self._stack.append(attrs.get("class", ""))

    def handle_endtag(self, tag):
        if tag == "div" and self._stack:
            self._stack.pop()


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _remote(page: _Page) -> list[str]:
    """URLs a page loads from the network (scripts, stylesheets, images)."""
    urls = page.scripts + page.stylesheets + [src for src, _ in page.images]
    return [u for u in urls if urlsplit(u).scheme in ("http", "https") or u.startswith("//")]


@pytest.fixture(scope="module")
def lessons_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lessons")
    (folder / "00_synthetic.py").write_text(SYNTHETIC)
    return folder


@pytest.fixture(scope="module")
def site(lessons_dir, tmp_path_factory):
    """The site of the synthetic lesson and tutorial 01, built in this process."""
    out = tmp_path_factory.mktemp("site")
    with pytest.MonkeyPatch.context() as mp:  # as tests/test_tutorials.py runs them: generated data, no user cache
        mp.delenv("MINIVIT_CIFAR10", raising=False)
        mp.setenv("MINIVIT_CACHE", str(tmp_path_factory.mktemp("decode_cache")))
        lessons = build_site.build([lessons_dir / "00_synthetic.py", TUTORIALS / f"{REAL}.py"], out, log=print)
    return out, lessons


def test_the_site_has_an_index_a_page_and_an_executed_notebook_per_lesson(site):
    out, lessons = site
    assert [l.stem for l in lessons] == ["00_synthetic", REAL]
    for lesson in lessons:
        assert (out / f"{lesson.stem}.html").is_file() and (out / f"{lesson.stem}.ipynb").is_file()
    index = _read(out / "index.html")
    assert "A synthetic lesson" in index and "Show inline math" in index  # title and goal, from the first cell
    assert "An image is a sequence of patches" in index
    for t in range(1, 20):  # the README's topic map
        assert re.search(rf"<td>T{t}\b", index), f"T{t} missing from the index's topic map"
    hrefs = {a.get("href") for a in _Page(index).links}
    assert {"00_synthetic.html", f"{REAL}.html", f"{REAL}.ipynb"} <= hrefs
    sections = [h.split("#", 1)[1] for h in hrefs if h and h.startswith(f"{REAL}.html#")]
    assert sections, "no § section of the topic map linked to its heading"
    real = _read(out / f"{REAL}.html")
    for anchor in sections:
        assert f'id="{anchor}"' in real, f"the index links to {REAL}.html#{anchor}, which is no heading there"


def test_every_image_output_of_the_executed_notebook_is_an_img_on_its_page(site):
    import nbformat

    out, lessons = site
    runner = build_site.runner
    for lesson in lessons:
        nb = nbformat.read(out / f"{lesson.stem}.ipynb", as_version=4)
        expected = runner.image_outputs(nb)
        page = _Page(_read(out / f"{lesson.stem}.html"))
        in_outputs = [src for src, where in page.images if "jp-OutputArea-output" in where]
        assert len(in_outputs) == expected, (lesson.stem, len(in_outputs), expected)
        assert all(src.startswith("data:image/") for src in in_outputs)  # embedded in the page
    synthetic = _Page(_read(out / "00_synthetic.html"))
    kinds = sorted(src.split(";")[0] for src, _ in synthetic.images)
    assert kinds == ["data:image/jpeg", "data:image/png", "data:image/svg+xml"]
    assert lessons[1].images >= 1  # tutorial 01 shows its figures


def test_math_markup_is_on_the_page_and_mathjax_only_where_there_is_math(site):
    out, _ = site
    synthetic = _read(out / "00_synthetic.html")
    assert r"$e^{i\pi} + 1 = 0$" in synthetic
    assert r"$$\mathrm{softmax}\left(\frac{q k^\top}{\sqrt{d}}\right) v$$" in synthetic
    assert "MathJax.Hub.Config" in synthetic and any("mathjax" in s.lower() for s in _Page(synthetic).scripts)
    real = _Page(_read(out / f"{REAL}.html"))
    assert not _remote(real), f"{REAL} has no math and should load nothing from the network: {_remote(real)}"
    index = _read(out / "index.html")  # the synthetic goal has math: MathJax there too
    assert r"$e^{i\pi} + 1 = 0$" in index and "MathJax.Hub.Config" in index


def test_code_is_highlighted_and_outputs_are_shown(site):
    out, _ = site
    page = _read(out / "00_synthetic.html")
    assert '<div class="highlight' in page
    assert re.search(r'<span class="kn">import</span>', page)  # pygments token classes
    assert "a stream output" in page


def test_pages_link_to_previous_next_source_notebook_and_learner_copy(site, lessons_dir):
    out, _ = site
    pages = {"00_synthetic": (None, f"{REAL}.html"), REAL: ("00_synthetic.html", None)}
    sources = {}
    for stem, (prev, nxt) in pages.items():
        page = _Page(_read(out / f"{stem}.html"))
        rels = {a.get("rel"): a["href"] for a in page.links if a.get("rel") in ("prev", "next")}
        assert rels.get("prev") == prev and rels.get("next") == nxt, (stem, rels)
        for href in rels.values():
            assert (out / href).is_file(), href
        source = {a["href"] for a in page.links if a.get("class") == "course-source"}
        assert len(source) == 1
        sources[stem] = target = (out / unquote(source.pop())).resolve()
        assert target.is_file() and target.name == f"{stem}.py"
        assert any(a.get("href") == f"{stem}.ipynb" for a in page.links)
    assert sources == {"00_synthetic": lessons_dir / "00_synthetic.py", REAL: TUTORIALS / f"{REAL}.py"}
    assert "python tutorials/learner_copy.py 01" in _read(out / f"{REAL}.html")


def test_a_failing_cell_fails_the_build_naming_the_notebook_and_the_cell(tmp_path):
    broken = tmp_path / "02_broken.py"
    broken.write_text(BROKEN)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    run = subprocess.run([sys.executable, str(BUILDER), "--out", str(tmp_path / "site"), "--only", str(broken)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode != 0
    message = run.stderr.strip()
    assert message.count("\n") == 0, f"one line expected, got:\n{run.stderr}"
    assert "Traceback" not in message
    assert "02_broken.py" in message and "cell 3 of 4" in message and "line 9" in message
    assert "assert x == 2" in message
    assert "AssertionError: x should be 2" in message
    assert not (tmp_path / "site" / "index.html").exists()


def test_the_builder_refuses_to_write_into_tutorials():
    with pytest.raises(build_site.BuildError, match="outside tutorials"):
        build_site.build([], TUTORIALS / "site")
    assert not (TUTORIALS / "site").exists()


# ---- in a browser -----------------------------------------------------------------------------

def _chrome():
    """A headless Chromium driven by selenium, or skip with the reason."""
    pytest.importorskip("selenium", reason="the browser test needs selenium: pip install -e '.[site]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the browser test needs Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1600", "--allow-file-access-from-files"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def test_pages_load_in_chromium_without_errors_and_every_image_decodes(site, lessons_dir, tmp_path):
    """Each page opened from disk: no severe console entry, every <img> decoded (naturalWidth > 0).
    The browser has no network to count on: the pages opened load nothing remote (checked first);
    the synthetic lesson, which has math, is rebuilt without MathJax (its TeX stays as written),
    and so is an index."""
    out, _ = site
    offline = tmp_path / "offline"
    build_site.build([lessons_dir / "00_synthetic.py"], offline, mathjax_url="", log=print)
    pages = [out / f"{REAL}.html", offline / "index.html", offline / "00_synthetic.html"]
    for page in pages:
        assert not _remote(_Page(_read(page))), f"{page.name} loads from the network"
    browser = _chrome()
    try:
        for page in pages:
            browser.get(page.as_uri())
            images = browser.execute_script(
                "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
            severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
            assert not severe, f"{page.name}: {severe}"
            assert all(complete and width > 0 for complete, width in images), (page.name, images)
            if page.name != "index.html":
                assert images, f"{page.name} shows no image"
        browser.get((out / f"{REAL}.html").as_uri())
        shot = tmp_path / f"{REAL}.png"  # the top of the page: navigation, links, title, goal, code
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
        from selenium.webdriver.common.by import By

        figure = browser.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output img")
        browser.execute_script("arguments[0].scrollIntoView();", figure)
        figure_shot = tmp_path / f"{REAL}_figure.png"  # its first figure, as the browser drew it
        assert figure.screenshot(str(figure_shot)) and figure_shot.stat().st_size > 0
        print(f"screenshots: {shot} {figure_shot}")
    finally:
        browser.quit()
