"""Build the student and solution notebooks from one source per notebook.

The sources are jupytext "percent" scripts in ``notebooks/exercises/src/``. Inside a
solution, the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` are the answer:
the solution notebook keeps them (without the markers), the student notebook replaces
them with a stub that raises NotImplementedError (which ``check`` reports kindly).

    python -m rodimus_lab.exercises.build           # writes notebooks/exercises/{student,solutions}/
    python -m rodimus_lab.exercises.build --check   # exit 1 if the notebooks there are stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB = ["# YOUR CODE HERE", "raise NotImplementedError"]
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "notebooks" / "exercises"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def strip_solutions(source: str, *, student: bool) -> str:
    """The source with each solution block replaced by a stub (student) or unmarked (solution)."""
    out, in_solution = [], False
    for number, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker == BEGIN:
            if in_solution:
                raise ValueError(f"line {number}: {BEGIN} inside another solution block")
            in_solution = True
            indent = line[: len(line) - len(line.lstrip())]
            if student:
                out += [indent + stub for stub in STUB]
        elif marker == END:
            if not in_solution:
                raise ValueError(f"line {number}: {END} without a {BEGIN}")
            in_solution = False
        elif not (student and in_solution):
            out.append(line)
    if in_solution:
        raise ValueError(f"a {BEGIN} block is never closed with {END}")
    return "\n".join(out) + "\n"


def to_notebook(source: str, name: str):
    """A notebook from percent-format text, with stable cell ids and only the metadata we need."""
    import jupytext

    notebook = jupytext.reads(source, fmt="py:percent")
    notebook.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for number, cell in enumerate(notebook.cells):
        cell.id = f"{re.sub(r'[^A-Za-z0-9-]', '-', name)}-{number}"
        cell.metadata.pop("lines_to_next_cell", None)
    return notebook


def render(source: str, name: str, *, student: bool) -> str:
    """The .ipynb text of one version of one source."""
    import nbformat

    return nbformat.writes(to_notebook(strip_solutions(source, student=student), name))


def build(root: Path = DEFAULT_ROOT, *, check: bool = False) -> list[Path]:
    """Write (or, with check, compare) every notebook; returns the paths written or found stale."""
    sources = sorted((root / "src").glob("*.py"))
    if not sources:
        raise FileNotFoundError(f"no exercise sources in {root / 'src'} (expected jupytext percent .py files)")
    touched = []
    for src in sources:
        text = src.read_text()
        for folder, student in (("student", True), ("solutions", False)):
            target = root / folder / f"{src.stem}.ipynb"
            rendered = render(text, src.stem, student=student)
            if target.exists() and target.read_text() == rendered:
                continue
            touched.append(target)
            if not check:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(rendered)
    return touched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help="folder holding src/ (default: notebooks/exercises of this checkout)")
    parser.add_argument("--check", action="store_true", help="only report notebooks that are out of date")
    args = parser.parse_args(argv)
    touched = build(args.root, check=args.check)
    verb = "stale" if args.check else "written"
    for path in touched:
        print(f"{verb}: {path}")
    if args.check and touched:
        print("run `python -m rodimus_lab.exercises.build` and commit the notebooks", file=sys.stderr)
        return 1
    print(f"{len(touched)} notebook(s) {verb}; sources in {args.root / 'src'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
