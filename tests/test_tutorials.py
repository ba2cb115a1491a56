"""The tutorials (tutorials/NN_*.py, jupytext percent format) run, top to bottom, in a real Jupyter
kernel of this Python, each within its time budget; their learner copies stop at the first
exercise (checked in the same kernel run: see _execute_with_learner_stubs); they follow the
notebook conventions; tutorials/README.md lists every notebook and maps every topic of the paper
(T1-T19) to where it is covered; and a run leaves the working tree clean.

Every tutorials/NN_*.py is picked up by itself: adding a notebook adds its tests. The notebooks
need the [test] extra (jupytext, nbclient, nbformat, ipykernel); without them those tests skip.

Budgets: a notebook is written to take well under 30 s on two cores; the test allows BUDGET_S
(60 s) each, kernel start included, and SUITE_BUDGET_S (6 min) for the whole set. On a slower or
busy machine, scale both with MINIVIT_TUTORIAL_BUDGET_SCALE=2 (say).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notebook_harness import CIFAR10, has_cifar10, load_tutorial_module

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(p for p in TUTORIALS.glob("[0-9][0-9]_*.py") if re.fullmatch(r"\d\d_\w+\.py", p.name))
SCALE = float(os.environ.get("MINIVIT_TUTORIAL_BUDGET_SCALE", "1"))
BUDGET_S = 60 * SCALE  # per notebook, kernel start included
SUITE_BUDGET_S = 360 * SCALE  # the whole set
NOTEBOOK_SOURCE = re.compile(r"\d\d_\w+\.py")  # a notebook another author adds meanwhile is no run's output
TIMES: dict[str, float] = {}  # notebook -> seconds, filled by the run test, checked by the suite-budget test
# Notebooks that look inside the course's trained CIFAR-10 model need CIFAR-10 test images: a learner's
# run downloads them (or reads MINIVIT_CIFAR10); the tests read the JPEG tree beside the repository,
# or skip those notebooks with the reason where it is absent (no download in tests).
NEEDS_CIFAR10 = {"07_inside_a_vit", "08_finetuning", "09_fewshot"}
# A line that makes a figure: every one must be shown on the page (at least one image output each).
MAKES_FIGURE = re.compile(r"^[^#\n]*(?:\bplots\.plot_\w+\(|\bFigure\(|\bplt\.(?:figure|subplots)\()", re.M)


# ---- helpers ---------------------------------------------------------------------------------

def _tools():
    """jupytext and nbclient, or skip with the reason."""
    for name in ("jupytext", "nbclient", "nbformat", "ipykernel"):
        pytest.importorskip(name, reason=f"the notebook tests need {name}: pip install -e '.[test]'")
    import jupytext
    import nbclient

    return jupytext, nbclient


learner_copy = load_tutorial_module("learner_copy")
runner = load_tutorial_module("notebook_runner")  # converts and runs a notebook; tutorials/build_site.py runs them with it too


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec named "python3" that starts ipykernel with this very interpreter, found first
    (JUPYTER_PATH), and the kernel's environment: the repository importable, no CIFAR-10."""
    _tools()
    with runner.kernel_environment(tmp_path_factory.mktemp("kernel"),
                                   MINIVIT_CIFAR10=None,  # the tests use the small, generated data
                                   MINIVIT_CACHE=str(tmp_path_factory.mktemp("decode_cache"))):  # never the user's
        with pytest.MonkeyPatch.context() as mp:
            yield mp


def _read(path_or_text, jupytext):
    return runner.read_notebook(path_or_text)


def _execute(nb, cwd: Path, timeout: float):
    """Run every cell of `nb` in a fresh kernel, working directory `cwd`; raises on the first error."""
    return runner.run_cells(nb, cwd, timeout)


def _execute_with_learner_stubs(path: Path, cwd: Path, timeout: float, jupytext, stubs: list):
    """Run the notebook cell by cell in one fresh kernel, and just before each solution cell run
    the learner copy's stub of it. Up to its first exercise the learner copy is the notebook
    itself (checked here), so this runs the learner copy until it stops *and* the full notebook,
    for the price of one run. Appends (cell index, exception name, message) of each stub to `stubs`."""
    from nbclient.exceptions import CellExecutionError

    nb = jupytext.read(path)
    learner = _read(learner_copy.learner_text(path.read_text(), path.stem)[0], jupytext)
    assert len(learner.cells) == len(nb.cells)

    def run_stub(client, index, cell):
        stub = learner.cells[index]
        if "exercise" in stub.metadata.get("tags", []):
            try:
                client.execute_cell(stub, index)
                stubs.append((index, None, "the stub ran without error"))
            except CellExecutionError as e:
                stubs.append((index, e.ename, e.evalue))
        else:
            assert stub.source == cell.source, f"the learner copy changed cell {index}, not a solution"

    # raises runner.CellFailed (a CellExecutionError) at the first cell of the notebook that fails
    return runner.run_cells(nb, cwd, timeout, before=run_stub)


_image_outputs = runner.image_outputs  # how many figures a learner sees


def _files_under(folder: Path) -> set[str]:
    """Every file below `folder` (relative, '/'-separated), not following symbolic links."""
    return {str((Path(d) / f).relative_to(folder).as_posix()) for d, _, files in os.walk(folder) for f in files}


def _git(*args, ok=(0,)) -> str:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode in ok, run.stderr
    return run.stdout


def _git_ignored(paths) -> set[str]:
    """The paths (relative to the repository root) that .gitignore ignores, existing or not."""
    return set(_git("check-ignore", "--no-index", *paths, ok=(0, 1)).splitlines()) if paths else set()


def _cells(path: Path):
    """[(kind, header line, body text)] of a percent-format file, without jupytext."""
    out = []
    for cell in learner_copy.split_cells(path.read_text())[1:]:
        header = cell[0]
        kind = "markdown" if "[markdown]" in header else "code"
        out.append((kind, header, "".join(cell[1:])))
    return out


# ---- running the notebooks -------------------------------------------------------------------

def test_there_are_tutorials_to_test():
    assert len(NOTEBOOKS) >= 5, NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_within_its_budget_and_its_learner_copy_fails_at_each_exercise(path, kernel_env, tmp_path):
    """Run as Jupyter runs it (working directory tutorials/, outputs to MINIVIT_TUTORIAL_OUT): every
    cell passes, within the budget, and the learner copy's stub of every exercise raises
    NotImplementedError where the solution would run, the first one after exactly the cells that
    precede it in the learner copy."""
    jupytext, _ = _tools()
    kernel_env.setenv("MINIVIT_TUTORIAL_OUT", str(tmp_path / "out"))
    if path.stem in NEEDS_CIFAR10:
        if not has_cifar10():
            pytest.skip(f"{path.name} shows CIFAR-10 test images; {CIFAR10} is absent (set MINIVIT_CIFAR10) "
                        "and tests do not download")
        kernel_env.setenv("MINIVIT_CIFAR10", str(CIFAR10))
    before = _files_under(TUTORIALS)
    start = time.perf_counter()
    stubs = []
    nb = _execute_with_learner_stubs(path, cwd=TUTORIALS, timeout=BUDGET_S, jupytext=jupytext, stubs=stubs)
    TIMES[path.name] = seconds = time.perf_counter() - start
    print(f"{path.name}: {seconds:.1f} s, {len(stubs)} exercises")
    assert seconds < BUDGET_S, f"{path.name} took {seconds:.1f} s, over its budget of {BUDGET_S:.0f} s"
    for number, (index, ename, message) in enumerate(stubs, start=1):
        assert ename == "NotImplementedError" and f"Exercise {number} " in message, (path.name, index, message)
    written = {f for f in _files_under(TUTORIALS) - before if not NOTEBOOK_SOURCE.fullmatch(f)}
    assert not written, f"a notebook run wrote into tutorials/: {sorted(written)}"
    figures = len(MAKES_FIGURE.findall(path.read_text()))
    images = _image_outputs(nb)
    print(f"{path.name}: {figures} lines make figures, {images} images on the page")
    assert images >= figures, f"{path.name} makes figures on {figures} lines but shows {images} images inline"


def test_the_whole_set_of_notebooks_fits_the_suite_budget():
    """Runs after the notebooks above (pytest keeps file order); skips if they did not all run."""
    if set(TIMES) != {p.name for p in NOTEBOOKS}:
        pytest.skip("needs every notebook's run in this session (run the whole file)")
    total = sum(TIMES.values())
    print("notebook times: " + ", ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()) + f"; total {total:.1f} s")
    assert total < SUITE_BUDGET_S, f"the notebooks took {total:.0f} s together, over {SUITE_BUDGET_S:.0f} s"


def test_the_harness_reports_each_stub_and_raises_at_a_failing_cell(kernel_env, tmp_path):
    """The checks above can fail: on a small notebook whose last cell fails, the harness records
    the stub's NotImplementedError, runs the solution and its check, then raises at the failure."""
    jupytext, nbclient = _tools()
    fake = tmp_path / "99_fake.py"
    fake.write_text('# %% [markdown]\n# Goal: none.\n\n# %%\nx = 1\n\n# %% tags=["solution"]\ny = x + 1\n\n'
                    "# %%\nassert y == 2\n\n# %%\nassert x == 2, 'this cell fails'\n")
    stubs = []
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="this cell fails"):
        _execute_with_learner_stubs(fake, cwd=tmp_path, timeout=60, jupytext=jupytext, stubs=stubs)
    assert [(i, name) for i, name, _ in stubs] == [(2, "NotImplementedError")]
    assert "Exercise 1 of 99_fake: define y" in stubs[0][2]


def test_figures_count_only_when_shown_on_the_page(kernel_env, tmp_path):
    """A figure that is a cell's result (or displayed) is an image output; one only saved to a file
    is not, so a notebook that saves without showing fails the count of the run test."""
    jupytext, _ = _tools()
    text = ("# %%\nfrom minivit.analysis import plots\nfig = plots.Figure()\nfig.add_subplot().plot([1, 2])\nfig\n\n"
            "# %%\nother = plots.Figure()\nother.add_subplot().plot([2, 1])\n"
            f"other.savefig({str(tmp_path / 'f.png')!r})\n")
    nb = _execute(_read(text, jupytext), cwd=tmp_path, timeout=60)
    assert _image_outputs(nb) == 1
    assert len(MAKES_FIGURE.findall(text)) == 2  # two figures made, one shown: the run test would fail
    assert (tmp_path / "f.png").exists()


def test_the_kernel_runs_the_interpreter_of_the_tests(kernel_env, tmp_path):
    jupytext, _ = _tools()
    nb = _read("# %%\nimport sys\nprint(sys.executable)\n", jupytext)
    _execute(nb, cwd=tmp_path, timeout=60)
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


def test_a_notebook_run_leaves_tutorials_and_git_status_clean(kernel_env, tmp_path):
    """Run 01 as `python tutorials/01_patches.py` would from the repository root, with the default
    output folder (runs/tutorials): nothing new in tutorials/ (not even ignored files such as
    .ipynb), and every new file git-ignored, so `git status` shows nothing new. It runs in a copy
    of tutorials/ under a private root, so that other processes writing to the working tree at the
    same time cannot confuse the check."""
    jupytext, _ = _tools()
    kernel_env.delenv("MINIVIT_TUTORIAL_OUT", raising=False)
    root = tmp_path / "repo"
    shutil.copytree(TUTORIALS, root / "tutorials", ignore=shutil.ignore_patterns("__pycache__"))
    before = _files_under(root)
    _execute(_read(root / "tutorials" / NOTEBOOKS[0].name, jupytext), cwd=root, timeout=BUDGET_S)
    new = sorted(_files_under(root) - before)
    assert any(f.startswith("runs/tutorials/") for f in new), "01 should write its figure to runs/tutorials"
    assert not [f for f in new if f.startswith("tutorials/")], f"the run wrote into tutorials/: {new}"
    shown = set(new) - _git_ignored(new)
    assert not shown, f"files git would show as new: {sorted(shown)}"


# ---- exercises and learner copies ------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_learner_copy_changes_only_the_solution_cells(path):
    text, count = learner_copy.learner_text(path.read_text(), path.stem)
    original = learner_copy.split_cells(path.read_text())
    copy = learner_copy.split_cells(text)
    assert len(copy) == len(original)
    stubbed = 0
    for old, new in zip(original, copy):
        if learner_copy.SOLUTION.match(old[0] if old else ""):
            stubbed += 1
            code = [line for line in old[1:] if line.strip() and not line.lstrip().startswith("#")]
            assert not set(code) & set(new), f"solution code left in the learner copy of {path.name}"
            assert any(f"Exercise {stubbed}" in line for line in new)
        else:
            assert old == new
    assert stubbed == count


def test_learner_copy_script_writes_outside_tutorials(tmp_path, capsys):
    assert learner_copy.main(["--out", str(tmp_path), "01"]) == 0
    assert (tmp_path / NOTEBOOKS[0].name).exists()
    assert "exercise" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        learner_copy.main(["--out", str(TUTORIALS / "copies")])
    assert not (TUTORIALS / "copies").exists()


# ---- the conventions every notebook follows --------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_states_its_goal_checks_its_claims_and_checks_each_exercise(path):
    cells = _cells(path)
    assert cells and cells[0][0] == "markdown" and "goal" in cells[0][2].lower(), \
        f"{path.name} should open with a markdown cell stating its goal"
    assert any(kind == "code" and re.search(r"^\s*assert\b", body, re.M) for kind, _, body in cells), \
        f"{path.name} has no check cell (assert)"
    for i, (kind, header, body) in enumerate(cells):
        if learner_copy.SOLUTION.match(header):
            after = cells[i + 1] if i + 1 < len(cells) else ("none", "", "")
            assert after[0] == "code" and re.search(r"^\s*assert\b", after[2], re.M), \
                f"{path.name}: the solution cell {i} must be followed directly by a check cell (assert)"
    text = path.read_text()
    if re.search(r"savefig|write_text|np\.save|open\(", text):
        assert "MINIVIT_TUTORIAL_OUT" in text, f"{path.name} writes files but not to MINIVIT_TUTORIAL_OUT"


def test_generated_notebooks_are_git_ignored_and_none_is_committed():
    assert "tutorials/*.ipynb" in (ROOT / ".gitignore").read_text().splitlines()
    assert _git_ignored(["tutorials/01_patches.ipynb", "runs/tutorials/01_patches.png"]) == {
        "tutorials/01_patches.ipynb", "runs/tutorials/01_patches.png"}
    assert _git_ignored(["tutorials/01_patches.py", "tutorials/figure.png"]) == set()
    assert not [f for f in _git("ls-files", "tutorials").splitlines() if f.endswith(".ipynb")]


# ---- tutorials/README.md ---------------------------------------------------------------------

README = TUTORIALS / "README.md"
ROW = re.compile(r"^\|\s*(\d\d)\s*\|(.*)\|\s*$")
TOPIC_ROW = re.compile(r"^\|\s*T(\d+)\b[^|]*\|(.*)\|\s*$")
LINK = re.compile(r"\[(\d\d)\]\((\d\d_\w+\.py)\)")


def _sequence():
    """{number: (file name, status)} from the README's table of notebooks."""
    rows = {}
    for line in README.read_text().splitlines():
        m = ROW.match(line)
        if m:
            cols = [c.strip() for c in m.group(2).split("|")]
            name = re.search(r"\d\d_\w+\.py", cols[0])
            assert name and name.group().startswith(m.group(1)), line
            rows[m.group(1)] = (name.group(), cols[-1])
    return rows


def _topics():
    """{topic number: text of the 'where' column} from the README's topic table."""
    out = {}
    for line in README.read_text().splitlines():
        m = TOPIC_ROW.match(line)
        if m:
            out[int(m.group(1))] = m.group(2).split("|")[-1].strip()
    return out


def test_readme_lists_every_notebook_and_every_notebook_it_calls_present_exists():
    rows = _sequence()
    assert sorted(rows) == [f"{i:02d}" for i in range(1, 16)], "the README should list notebooks 01-15"
    for number, (name, status) in rows.items():
        assert status.startswith(("present", "planned")), f"{name}: status should say present or planned"
        if status.startswith("present"):
            assert (TUTORIALS / name).exists(), f"README lists {name} as present but it does not exist"
    listed = {name for name, _ in rows.values()}
    for path in NOTEBOOKS:
        assert path.name in listed, f"{path.name} is not listed in tutorials/README.md"


def test_readme_maps_every_topic_to_an_existing_notebook_section_or_experiment():
    rows = _sequence()
    topics = _topics()
    assert sorted(topics) == list(range(1, 20)), "the README should map each of T1..T19 once"
    for t, where in topics.items():
        assert where, f"T{t} is not mapped"
        for item in where.split(";"):
            for number, name in LINK.findall(item):
                assert number in rows and rows[number][0] == name, f"T{t}: {name} is not in the sequence"
            links = LINK.findall(item)
            sections = re.findall(r"§\s*([^§(]+?)\s*(?=§|\(|$)", LINK.sub("", item))  # "(...)": a note
            if sections:
                assert links, f"T{t}: a section without its notebook in {item!r}"
                path = TUTORIALS / links[-1][1]
                if rows[links[-1][0]][1].startswith("present"):
                    headings = {h.strip() for h in re.findall(r"^# #+ (.+)$", path.read_text(), re.M)}
                    for s in sections:
                        assert s in headings, f"T{t}: no heading {s!r} in {path.name}"
            for ref in re.findall(r"experiments/[\w./-]+", item):
                planned = re.search(re.escape(ref) + r"`?\s*\(planned", item)
                assert planned or (ROOT / ref.rstrip("/.")).exists(), f"T{t}: {ref} does not exist"
