"""The exercise notebooks: built from one source, up to date, and executable.

Student notebooks run as handed out (stubs unfilled) must fail every check cell with the
friendly "not implemented yet" message; solution notebooks must run clean with every check
passing. Both are built fresh from notebooks/exercises/src into a temporary folder.
"""

import shutil
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

from rodimus_lab.exercises import exercises
from rodimus_lab.exercises.build import DEFAULT_ROOT, build, strip_solutions

SOURCES = sorted((DEFAULT_ROOT / "src").glob("*.py"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exercises")
    shutil.copytree(DEFAULT_ROOT / "src", root / "src")
    written = build(root)
    assert len(written) == 2 * len(SOURCES)
    return root


@pytest.fixture(scope="module", autouse=True)
def python3_kernel():
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.fail("no 'python3' Jupyter kernel: `pip install ipykernel` (and, in a venv, "
                    "`python -m ipykernel install --sys-prefix`)")


def execute(path: Path, *, allow_errors: bool):
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=120, allow_errors=allow_errors,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return notebook


def is_check(cell) -> bool:
    return cell.cell_type == "code" and "check" in cell.metadata.get("tags", [])


def errors(cell) -> list:
    return [out for out in cell.get("outputs", []) if out.output_type == "error"]


def test_the_committed_notebooks_match_their_sources():
    assert build(DEFAULT_ROOT, check=True) == [], "run `python -m rodimus_lab.exercises.build` and commit"


def test_every_exercise_has_a_check_cell_in_some_notebook():
    text = "".join(src.read_text() for src in SOURCES)
    for exercise_id in exercises():
        assert f'check("{exercise_id}",' in text


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_student_notebook_as_handed_out_fails_its_checks_kindly(built, source):
    notebook = execute(built / "student" / f"{source.stem}.ipynb", allow_errors=True)
    checks = [cell for cell in notebook.cells if is_check(cell)]
    assert checks
    for cell in notebook.cells:
        if is_check(cell):
            [error] = errors(cell)
            assert error.ename == "ExerciseFailed"
            assert "not implemented yet — replace the `raise NotImplementedError` line" in error.evalue
            assert len(error.traceback) <= 2      # the message, not the checker's frames
        else:
            assert not errors(cell), cell.source


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_solution_notebook_runs_clean_and_passes_every_check(built, source):
    notebook = execute(built / "solutions" / f"{source.stem}.ipynb", allow_errors=False)
    for cell in filter(is_check, notebook.cells):
        printed = "".join(out.get("text", "") for out in cell.outputs if out.output_type == "stream")
        assert printed.startswith("✓ "), printed


def test_student_version_hides_every_solution(built):
    for source in SOURCES:
        student = (built / "student" / f"{source.stem}.ipynb").read_text()
        solution = (built / "solutions" / f"{source.stem}.ipynb").read_text()
        assert "SOLUTION" not in student and "SOLUTION" not in solution
        assert "raise NotImplementedError" in student and "raise NotImplementedError" not in solution


def test_strip_solutions_keeps_indentation_and_refuses_broken_markers():
    source = "def f(x):\n    # BEGIN SOLUTION\n    return x\n    # END SOLUTION\n"
    assert strip_solutions(source, student=False) == "def f(x):\n    return x\n"
    assert strip_solutions(source, student=True) == (
        "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError\n")
    with pytest.raises(ValueError, match="never closed"):
        strip_solutions("# BEGIN SOLUTION\nx = 1\n", student=True)
    with pytest.raises(ValueError, match="without a # BEGIN SOLUTION"):
        strip_solutions("x = 1\n# END SOLUTION\n", student=True)
