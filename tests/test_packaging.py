"""The project's own files agree with each other: packages, environment.yml, README commands, CI."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rodimus_lab").rglob("__init__.py")}
    found.add("rodimus_kernels")   # the folder kernels/, mapped in [tool.setuptools.package-dir]
    kernel_subpackages = {
        "rodimus_kernels." + ".".join(p.parent.relative_to(ROOT / "kernels").parts)
        for p in (ROOT / "kernels").rglob("__init__.py") if p.parent != ROOT / "kernels"
    }
    assert found | kernel_subpackages == listed
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"rodimus_kernels": "kernels"}


def test_kernels_install_as_rodimus_kernels():
    import rodimus_kernels

    assert Path(rodimus_kernels.__file__).resolve().parent == ROOT / "kernels"


def test_environment_yml_follows_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    major, minor = map(int, python.split("=")[1].split(".")[:2])
    lowest = tuple(map(int, re.search(r">=\s*(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"]).groups()))
    assert (major, minor) >= lowest
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    # pyproject.toml is the single source of Python dependencies: environment.yml only installs the project
    assert len(pip) == 1 and pip[0].startswith("-e .[")
    extras = pip[0][len("-e .["):-1].split(",")
    assert set(extras) <= set(PYPROJECT["project"]["optional-dependencies"])


def test_readme_commands_are_make_targets_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^make (\w+)", readme, flags=re.M)
    assert commands[:2] == ["demo", "test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in commands:
        assert re.search(rf"^{target}:", makefile, flags=re.M), f"README runs `make {target}`, the Makefile lacks it"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)
