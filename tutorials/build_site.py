"""Build the course site: every tutorial executed, one HTML page each with its outputs and figures.

    python tutorials/build_site.py --out runs/site                   # all tutorials
    python tutorials/build_site.py --out runs/site --only 01 03      # a subset (numbers or .py paths)
    python tutorials/build_site.py --out runs/site --cifar10 PATH    # CIFAR-10 for 07-09
    python tutorials/build_site.py --out runs/site --source-base https://github.com/OWNER/REPO/blob/main/tutorials/

Each tutorial (tutorials/NN_name.py) is converted with jupytext and executed with nbclient in a
fresh kernel of this interpreter, working directory tutorials/, exactly as tests/test_tutorials.py
runs it (both use tutorials/notebook_runner.py). The site gets, for each notebook, NN_name.html
(nbconvert's HTML exporter, JupyterLab look: highlighted code, outputs, figures embedded as data
URIs) and the executed NN_name.ipynb beside it, and index.html: each lesson's title and goal (from
the notebook's first markdown cell) and the T1-T19 topic map of tutorials/README.md. Pages link
to the previous and next lesson, to their source .py file and to their executed .ipynb.

The kernel gets MINIVIT_TUTORIAL_OUT set to a temporary folder (deleted afterwards) and
MINIVIT_CIFAR10 from --cifar10, or passed through from the environment if set.

Math: a page whose markdown (or an output) holds TeX math loads MathJax from --mathjax-url
(default: nbconvert's, on a CDN; '' loads none and leaves the TeX as written). A page without
math loads nothing from the network.

A cell that fails stops the build with one line naming the notebook and the cell, exit status 1.
Needs the [site] extra: pip install -e ".[site]" (nbconvert, jupytext, nbclient, ipykernel).
"""
from __future__ import annotations

import argparse
import html
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = HERE / "README.md"
DEFAULT_TIMEOUT_S = 600  # per cell
# TeX math as nbconvert's markdown renderer and MathJax read it: $...$, $$...$$, \(...\), \[...\], \begin{env}
MATH = re.compile(r"(?<![\\$])\$(?=\S)[^$\n]+?(?<![\\\s])\$|\$\$.+?\$\$|\\\(|\\\[|\\begin\{", re.S)
TOPIC_ROW = re.compile(r"^\|\s*(T\d+\b[^|]*)\|(.*)\|\s*$")
HEADING = re.compile(r'<h(\d) id="([^"]+)">(.*?)<a class="anchor-link"', re.S)


def _load(name: str):
    """A module beside this file, without writing a __pycache__ into tutorials/."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.dont_write_bytecode = previous
    return module


runner = _load("notebook_runner")
learner_copy = _load("learner_copy")


class BuildError(Exception):
    """The build cannot go on; str() is the one message to show."""


class Lesson:
    """One notebook of the site: its file, what its first cell says, and, once run, its outputs."""

    def __init__(self, path: Path):
        self.path = path
        self.title = ""
        self.goal = ""  # markdown of the goal's paragraph
        self.proves = ""  # markdown of the list that follows it, if any
        self.exercises = 0
        self.nb = None  # the executed notebook
        self.seconds = 0.0
        self.images = 0
        self.headings: dict[str, str] = {}  # heading text -> its id on the page

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def number(self) -> str:
        return self.path.name[:2]

    @property
    def page(self) -> str:
        return f"{self.stem}.html"


# ---- choosing and reading the notebooks ----------------------------------------------------------

def select(which=None) -> list[Path]:
    """The tutorials to build: all tutorials/NN_*.py, or those named in `which` by number
    ("03"), file name ("03_attention.py") or path to a percent-format .py file."""
    paths = learner_copy.notebooks(HERE)
    if not which:
        return paths
    chosen = []
    for w in which:
        found = [p for p in paths if p.name.startswith(w) or p.name == w]
        if not found and Path(w).suffix == ".py" and Path(w).is_file():
            found = [Path(w).resolve()]
        if not found:
            raise BuildError(f"no tutorial matches {w!r}; there are: {', '.join(p.name for p in paths)}")
        chosen += [p for p in found if p not in chosen]
    return sorted(chosen, key=lambda p: p.name)


def describe(path: Path, nb) -> Lesson:
    """Title, goal and exercise count of a tutorial, from its first markdown cell and its text."""
    lesson = Lesson(path)
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title = next((line.lstrip("#").strip() for line in first.splitlines() if line.startswith("#")), "")
    lesson.title = title or path.stem
    paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", first) if p.strip()]
    for i, paragraph in enumerate(paragraphs):
        if "**goal" in paragraph.lower():
            lesson.goal = paragraph
            listed = []
            for following in paragraphs[i + 1:]:
                if not re.match(r"\s*(\d+\.|[-*])\s", following):
                    break
                listed.append(following)
            lesson.proves = "\n\n".join(listed)
            break
    lesson.exercises = learner_copy.learner_text(path.read_text(), path.stem)[1]
    return lesson


def topic_map(readme: Path = README) -> list[tuple[str, str]]:
    """[(topic, where it is covered, as markdown)] from the README's topic table."""
    rows = []
    for line in readme.read_text().splitlines():
        m = TOPIC_ROW.match(line)
        if m:
            rows.append((m.group(1).strip(), m.group(2).split("|")[-1].strip()))
    return rows


def has_math(nb) -> bool:
    """Does a markdown cell or a text/latex or text/markdown output hold TeX math?"""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and MATH.search(cell.source):
            return True
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/latex" in data or MATH.search(str(data.get("text/markdown", ""))):
                return True
    return False


# ---- running ------------------------------------------------------------------------------------

def _first_line(source: str) -> str:
    line = next((s.strip() for s in source.splitlines() if s.strip()), "")
    return line if len(line) <= 80 else line[:77] + "..."


def _line_in_file(path: Path, index: int, cell_count: int):
    """The line of the .py file where cell `index` starts, when the file's cells map one to one."""
    cells = learner_copy.split_cells(path.read_text())
    if len(cells) - 1 != cell_count:
        return None
    return 1 + sum(len(c) for c in cells[:index + 1])


def _failure_message(path: Path, nb, error) -> str:
    where = f"cell {error.index + 1} of {len(nb.cells)}"
    line = _line_in_file(path, error.index, len(nb.cells))
    if line is not None:
        where += f", starting at line {line} of the file"
    value = re.sub(r"\x1b\[[0-9;]*m", "", str(error.evalue)).strip()
    lines = value.splitlines()
    what = error.ename + (": " + " / ".join(lines[:5]) if lines else "") + (" / ..." if len(lines) > 5 else "")
    return f"{path.name} failed at {where}, which begins {_first_line(error.cell.source)!r}: {what}"


def execute(path: Path, timeout: float):
    """The tutorial, executed as the tests execute it (working directory: its folder)."""
    nb = runner.read_notebook(path)
    try:
        # the kernel's own log (stderr) is not the reader's business: cells' errors come back as messages
        return runner.run_cells(nb, cwd=path.parent, timeout=timeout, stderr=subprocess.DEVNULL)
    except runner.CellFailed as error:
        raise BuildError(_failure_message(path, nb, error)) from None


# ---- rendering ----------------------------------------------------------------------------------

PAGE_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{% from 'mathjax.html.j2' import mathjax %}

{#- no require.js from a CDN: nothing on these pages needs it -#}
{%- block html_head_js -%}{%- endblock html_head_js -%}

{%- block html_head_js_mathjax -%}
{%- if resources.course.math and resources.mathjax_url -%}
{{ mathjax(resources.mathjax_url) }}
{%- endif -%}
{%- endblock html_head_js_mathjax -%}

{% block extra_css %}
<style type="text/css">{{ resources.course.css }}</style>
{% endblock extra_css %}

{%- block body_header -%}
{{ super() }}
{{ resources.course.header }}
{%- endblock body_header -%}

{% block body_footer %}
{{ resources.course.footer }}
{{ super() }}
{% endblock body_footer %}
"""

CSS = """
.course-nav { display: flex; gap: 1em; align-items: baseline; justify-content: space-between;
  padding: 0.6em 1em; margin: 0 0 1em 0; background: #f3f5f7; border-radius: 6px;
  font-family: var(--jp-ui-font-family, sans-serif); font-size: 14px; }
.course-nav a { text-decoration: none; color: #1a5fb4; }
.course-nav .course-off { color: #999; }
.course-meta { margin: 0 1em 1.5em 1em; font-family: var(--jp-ui-font-family, sans-serif);
  font-size: 14px; color: #333; line-height: 1.5; }
.course-meta a { color: #1a5fb4; }
.course-meta code { background: #f3f5f7; padding: 0 0.3em; border-radius: 3px; }
"""

INDEX_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 60em;
  margin: 2em auto; padding: 0 1em; line-height: 1.5; color: #222; }
h1 { font-size: 1.8em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
a { color: #1a5fb4; }
ol.lessons { padding-left: 0; list-style: none; }
ol.lessons > li { margin: 0 0 1.5em 0; }
ol.lessons h3 { margin: 0 0 0.3em 0; font-size: 1.15em; }
.links { font-size: 0.9em; color: #555; }
code { background: #f3f5f7; padding: 0 0.3em; border-radius: 3px; }
table { border-collapse: collapse; width: 100%; font-size: 0.95em; }
th, td { border: 1px solid #ddd; padding: 0.4em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } td p { margin: 0; }
details summary { cursor: pointer; color: #555; }
"""


def _markdown(text: str, inline: bool = False) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    out = markdown2html_mistune(text).strip()
    if inline and out.startswith("<p>") and out.endswith("</p>") and out.count("<p>") == 1:
        out = out[3:-4]
    return out


def _source_href(path: Path, out: Path, source_base: str | None) -> str:
    if source_base:
        return source_base.rstrip("/") + "/" + path.name
    return Path(os.path.relpath(path, out.resolve())).as_posix()


def _nav(lesson: Lesson, prev: Lesson | None, nxt: Lesson | None) -> str:
    def link(other, rel, arrow_left):
        if other is None:
            return f'<span class="course-off">{"&larr; first lesson" if arrow_left else "last lesson &rarr;"}</span>'
        label = html.escape(other.title)
        text = f"&larr; {label}" if arrow_left else f"{label} &rarr;"
        return f'<a rel="{rel}" href="{other.page}">{text}</a>'

    return (f'<nav class="course-nav">{link(prev, "prev", True)}'
            f'<a href="index.html">Contents</a>{link(nxt, "next", False)}</nav>')


def _meta(lesson: Lesson, source: str) -> str:
    name = html.escape(lesson.path.name)
    lines = [f'Source: <a class="course-source" href="{html.escape(source)}">{name}</a>. '
             f'Executed notebook: <a class="course-ipynb" href="{lesson.stem}.ipynb" download>'
             f"{lesson.stem}.ipynb</a> (open it in Jupyter, or upload it to Colab: File &rsaquo; "
             "Upload notebook)."]
    if lesson.exercises:
        s = "s" if lesson.exercises != 1 else ""
        lines.append(f"{lesson.exercises} exercise{s}. Your copy, each solution replaced by a stub: "
                     f'<code class="course-learner">python tutorials/learner_copy.py {lesson.number}</code> '
                     "(add <code>--ipynb</code> for a notebook; run it from the repository root).")
    else:
        lines.append("No exercises in this lesson.")
    return '<div class="course-meta">' + "<br>".join(lines) + "</div>"


def _exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"course.html.j2": PAGE_TEMPLATE})],
                        template_file="course.html.j2")


def render_page(exporter, lesson: Lesson, prev, nxt, source: str, mathjax_url: str) -> str:
    nav = _nav(lesson, prev, nxt)
    resources = {"metadata": {"name": lesson.title}, "mathjax_url": mathjax_url,
                 "course": {"math": has_math(lesson.nb), "css": CSS,
                            "header": nav + _meta(lesson, source), "footer": nav}}
    body, _ = exporter.from_notebook_node(lesson.nb, resources=resources)
    return body


def _mathjax_snippet(exporter, url: str) -> str:
    """nbconvert's MathJax loader and configuration, as on the notebook pages."""
    if not url:
        return ""
    template = exporter.environment.from_string("{% from 'mathjax.html.j2' import mathjax %}{{ mathjax(url) }}")
    return template.render(url=url)


def render_index(lessons: list[Lesson], topics, out: Path, source_base: str | None, mathjax: str = "") -> str:
    """index.html: the lessons (title, goal, links) and the README's topic map. `mathjax` is put
    in the head when a title or goal holds math."""
    by_name = {l.path.name: l for l in lessons}
    intro_title, intro = "Tutorials", ""
    if README.exists():
        text = README.read_text()
        m = re.search(r"^# (.+)$", text, re.M)
        intro_title = m.group(1).strip() if m else intro_title
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip() and not p.startswith("#")]
        intro = _markdown(paragraphs[0]) if paragraphs else ""

    items = []
    for l in lessons:
        proves = (f"<details><summary>What the checks prove</summary>{_markdown(l.proves)}</details>"
                  if l.proves else "")
        ex = (f"{l.exercises} exercise{'s' if l.exercises != 1 else ''}: "
              f"<code>python tutorials/learner_copy.py {l.number}</code>" if l.exercises else "no exercises")
        items.append(
            f'<li><h3><a href="{l.page}">{html.escape(l.title)}</a></h3>{_markdown(l.goal)}{proves}'
            f'<div class="links"><a href="{l.stem}.ipynb" download>{l.stem}.ipynb</a> &middot; '
            f'<a href="{html.escape(_source_href(l.path, out, source_base))}">{html.escape(l.path.name)}</a>'
            f" &middot; {ex}</div></li>")

    def where_html(where: str) -> str:
        """The README's 'where' column: links to built pages, § sections to their headings."""
        def section_links(item: str) -> str:
            links = re.findall(r"\[(\d\d)\]\((\d\d_\w+\.py)\)", item)
            lesson = by_name.get(links[-1][1]) if links else None

            def section(m):
                name = m.group(1).strip()
                if lesson is None:
                    return m.group(0)
                anchor = lesson.headings.get(name)
                href = lesson.page + (f"#{anchor}" if anchor else "")
                return f"[§ {name}]({href}){m.group(2)}"
            return re.sub(r"§\s*([^§(]+?)(\s*)(?=§|\(|$)", section, item)

        def link(m):
            lesson = by_name.get(m.group(2))
            href = lesson.page if lesson else _source_href(HERE / m.group(2), out, source_base)
            return f"[{m.group(1)}]({href})"

        items_ = [section_links(item) for item in where.split(";")]
        text = ";".join(re.sub(r"\[(\d\d)\]\((\d\d_\w+\.py)\)", link, i) for i in items_)
        return _markdown(text, inline=True)

    rows = "".join(f"<tr><td>{_markdown(t, inline=True)}</td><td>{where_html(w)}</td></tr>" for t, w in topics)
    topic_table = (f"<table><thead><tr><th>topic</th><th>where it is covered</th></tr></thead>"
                   f"<tbody>{rows}</tbody></table>") if topics else "<p>(no topic table found)</p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{html.escape(intro_title)}</title>
<style>{INDEX_CSS}</style>
{mathjax if any(MATH.search(l.title + l.goal + l.proves) for l in lessons) else ""}
</head>
<body>
<h1>{html.escape(intro_title)}</h1>
{intro}
<p>Each page is a notebook executed when this site was built, with its outputs and figures. Every
lesson has its source file and its executed notebook (<code>.ipynb</code>) to download: open it in
Jupyter, or upload it to Colab (File &rsaquo; Upload notebook). To do the exercises yourself, make
a learner copy, in which each solution is replaced by a stub:
<code>python tutorials/learner_copy.py NN</code> (add <code>--ipynb</code> for a notebook).</p>
<h2>Lessons</h2>
<ol class="lessons">
{"".join(items)}
</ol>
<h2>Where each topic of the paper is covered</h2>
{topic_table}
</body>
</html>
"""


# ---- the build ----------------------------------------------------------------------------------

def build(paths, out, *, cifar10=None, source_base=None, mathjax_url=None,
          timeout: float = DEFAULT_TIMEOUT_S, log=print) -> list[Lesson]:
    """Execute each notebook of `paths` and write the site into `out`; returns the lessons.
    Raises BuildError (one message) when a cell fails. `mathjax_url`: None for nbconvert's
    default, '' for no MathJax."""
    import nbformat

    out = Path(out)
    if out.resolve() == HERE or HERE in out.resolve().parents:
        raise BuildError("write the site outside tutorials/ (e.g. --out runs/site)")
    exporter = _exporter()
    if mathjax_url is None:
        mathjax_url = exporter.mathjax_url
    exporter.mathjax_url = mathjax_url
    out.mkdir(parents=True, exist_ok=True)
    lessons = []
    with tempfile.TemporaryDirectory(prefix="minivit-site-") as tmp:
        env = {"MINIVIT_TUTORIAL_OUT": str(Path(tmp) / "out")}
        if cifar10 is not None:
            if not Path(cifar10).expanduser().exists():
                raise BuildError(f"--cifar10 {cifar10}: no such file or folder")
            env["MINIVIT_CIFAR10"] = str(Path(cifar10).expanduser().resolve())
        with runner.kernel_environment(Path(tmp), **env):
            for path in paths:
                path = Path(path).resolve()
                start = time.perf_counter()
                nb = execute(path, timeout)
                lesson = describe(path, nb)
                lesson.nb, lesson.seconds = nb, time.perf_counter() - start
                lesson.images = runner.image_outputs(nb)
                nbformat.write(nb, out / f"{lesson.stem}.ipynb")
                lessons.append(lesson)
                log(f"{path.name}: executed in {lesson.seconds:.1f} s, {lesson.images} images")
    for i, lesson in enumerate(lessons):
        prev = lessons[i - 1] if i > 0 else None
        nxt = lessons[i + 1] if i + 1 < len(lessons) else None
        page = render_page(exporter, lesson, prev, nxt, _source_href(lesson.path, out, source_base), mathjax_url)
        lesson.headings = {re.sub(r"<[^>]+>", "", text).strip(): anchor for _, anchor, text in HEADING.findall(page)}
        (out / lesson.page).write_text(page, encoding="utf-8")
    index = render_index(lessons, topic_map(), out, source_base, _mathjax_snippet(exporter, mathjax_url))
    (out / "index.html").write_text(index, encoding="utf-8")
    return lessons


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the site (created; outside tutorials/)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="build only these tutorials (numbers, names or .py paths); "
                        "prev/next then link the pages built")
    parser.add_argument("--cifar10", type=Path, help="CIFAR-10 for the notebooks that show its images "
                        "(sets MINIVIT_CIFAR10; by default it is passed through if set)")
    parser.add_argument("--source-base", help="URL of the tutorials/ folder for the source links "
                        "(default: a relative path from --out to tutorials/)")
    parser.add_argument("--mathjax-url", help="MathJax to load on pages with math ('' for none; "
                        "default: nbconvert's, from a CDN)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        for name in ("nbconvert", "jupytext", "nbclient", "nbformat", "ipykernel"):
            if importlib.util.find_spec(name) is None:
                raise BuildError(f"needs {name}: pip install -e '.[site]'")
        lessons = build(select(args.only), args.out, cifar10=args.cifar10, source_base=args.source_base,
                        mathjax_url=args.mathjax_url, timeout=args.timeout)
    except BuildError as error:
        print(f"build_site: error: {error}", file=sys.stderr)
        return 1
    index = (args.out / "index.html").resolve()
    print(f"{len(lessons)} pages, {sum(l.images for l in lessons)} images, in "
          f"{time.perf_counter() - start:.1f} s: open {index.as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
