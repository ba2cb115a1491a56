"""Make learner copies of the tutorials: every exercise's solution replaced by a stub.

    python tutorials/learner_copy.py                      # all tutorials -> runs/tutorials/learner/*.py
    python tutorials/learner_copy.py --out my_copies      # somewhere else
    python tutorials/learner_copy.py --ipynb 01 03        # notebooks 01 and 03, as .ipynb (needs jupytext)

A tutorial is a jupytext percent-format file (tutorials/NN_name.py). An exercise is a code cell
tagged as a solution,

    # %% tags=["solution"]
    def patchify(x, P):
        ...

directly followed by a check cell that uses what it defines. In the learner copy the solution
cell keeps its leading comment lines (write the exercise's instructions there, if any) and its
code becomes

    # %% tags=["exercise"]
    # Exercise 1: write your solution here; it should define patchify.
    raise NotImplementedError("Exercise 1 of 01_patches: define patchify")

so that running the copy stops at the first exercise not yet done. Every other cell is copied
unchanged. The copies go to a git-ignored folder (runs/), never into tutorials/.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOTEBOOK = re.compile(r"^\d\d_\w+\.py$")
CELL = re.compile(r"^# %%")  # a cell starts at every line beginning "# %%"
SOLUTION = re.compile(r"""^# %%.*\btags\s*=\s*\[[^\]]*["']solution["']""")


def notebooks(folder: Path = HERE) -> list[Path]:
    """The tutorials, tutorials/NN_*.py, in order."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.py") if NOTEBOOK.match(p.name))


def split_cells(text: str) -> list[list[str]]:
    """The file as a list of cells, each a list of lines (with their newlines); the first entry
    is whatever precedes the first cell marker (the jupytext header)."""
    cells: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if CELL.match(line):
            cells.append([])
        cells[-1].append(line)
    return cells


def definitions(code: str) -> list[tuple[str, str]]:
    """[(name, kind)] of the top-level names a cell defines, each once, in order of first
    definition; kind is "class", "function" or "value". A name is defined by `def`, `class` or an
    assignment to it (`x = ...`, `a, b = ...`, `x += ...`); assigning to an attribute or an item
    of a name (`Value.__mul__ = f`, `table[0] = 1`) changes that object and defines nothing."""
    found: dict[str, str] = {}
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.setdefault(node.name, "function")
        elif isinstance(node, ast.ClassDef):
            found.setdefault(node.name, "class")
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in _bound_names(target):
                    found.setdefault(name, "value")
    return list(found.items())


def _bound_names(target) -> list[str]:
    """The names an assignment target binds: `x`, the names in `a, (b, *c)`; none for `x.attr`
    or `x[i]`."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for element in target.elts for n in _bound_names(element)]
    return []


def defined_names(code: str) -> list[str]:
    """Top-level names a cell defines (functions, classes, assignments), each once, in order."""
    return [name for name, _ in definitions(code)]


def what_to_define(code: str) -> str:
    """What a stub asks for, read from the solution's definitions: "define Value (a class) and
    value_mul", "define patchify", or "complete this cell" when it defines no name."""
    items = [f"{name} (a class)" if kind == "class" else name for name, kind in definitions(code)]
    if not items:
        return "complete this cell"
    listed = items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
    return f"define {listed}"


def stub(cell: list[str], number: int, notebook: str) -> list[str]:
    """The learner's version of one solution cell (see the module docstring)."""
    header, body = cell[0], cell[1:]
    comments = []
    for line in body:  # leading comment lines stay: they are the exercise's instructions
        if not line.lstrip().startswith("#"):
            break
        comments.append(line)
    what = what_to_define("".join(body))
    header = header.replace('"solution"', '"exercise"').replace("'solution'", "'exercise'")
    return [header, *comments,
            f"# Exercise {number}: write your solution here; it should {what}.\n",
            f'raise NotImplementedError("Exercise {number} of {notebook}: {what}")\n', "\n", "\n"]


def learner_text(text: str, notebook: str = "this notebook") -> tuple[str, int]:
    """(the learner copy of a tutorial's text, the number of exercises stubbed)."""
    cells = split_cells(text)
    out, count = [cells[0]], 0
    for cell in cells[1:]:
        if SOLUTION.match(cell[0]):
            count += 1
            cell = stub(cell, count, notebook)
        out.append(cell)
    return "".join(line for cell in out for line in cell), count


def make_copies(paths, out_dir: Path, ipynb: bool = False) -> list[tuple[Path, int]]:
    """Write the learner copy of each tutorial into out_dir; returns [(path written, exercises)]."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        text, count = learner_text(Path(path).read_text(), Path(path).stem)
        target = out_dir / Path(path).name
        if ipynb:
            import jupytext  # pip install -e ".[notebooks]"

            target = target.with_suffix(".ipynb")
            jupytext.write(jupytext.reads(text, fmt="py:percent"), target)
        else:
            target.write_text(text)
        written.append((target, count))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", help="notebook numbers or file names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "tutorials" / "learner",
                        help="folder for the copies (default: runs/tutorials/learner, git-ignored)")
    parser.add_argument("--ipynb", action="store_true", help="write .ipynb notebooks (needs jupytext)")
    args = parser.parse_args(argv)
    paths = notebooks()
    if args.which:
        chosen = [p for p in paths if any(p.name.startswith(w) or p.name == w for w in args.which)]
        missing = [w for w in args.which if not any(p.name.startswith(w) or p.name == w for p in paths)]
        if missing:
            parser.error(f"no tutorial matches {missing}; there are: {', '.join(p.name for p in paths)}")
        paths = chosen
    if args.out.resolve() == HERE or HERE in args.out.resolve().parents:
        parser.error("write the copies outside tutorials/ (the default is runs/tutorials/learner)")
    for target, count in make_copies(paths, args.out, args.ipynb):
        print(f"{target}  ({count} exercise{'s' if count != 1 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
