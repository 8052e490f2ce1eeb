"""What `pip install .` ships: every package of the source tree, as setuptools reads pyproject.toml.

The wheel itself is built, installed into a fresh venv and run by `.ci/wheel_check.sh`
(`make wheel-check`, part of `make test`); this test is the cheap check of the same rule.
"""

from __future__ import annotations

from pathlib import Path

from setuptools.config.pyprojecttoml import read_configuration

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("ntp_envs", "experts", "agents", "evaluation")


def _shipped() -> dict:
    """``[tool.setuptools]`` of pyproject.toml as setuptools expands it (package finding run)."""
    return read_configuration(ROOT / "pyproject.toml", expand=True)["tool"]["setuptools"]


def _source_dirs() -> list[Path]:
    """Every folder under the top-level packages that holds Python source."""
    dirs = []
    for top in TOP_LEVEL:
        for path in [ROOT / top, *(ROOT / top).rglob("*")]:
            if path.is_dir() and path.name != "__pycache__" and any(path.glob("*.py")):
                dirs.append(path)
    return dirs


def test_every_source_folder_is_a_package() -> None:
    """A folder of modules without ``__init__.py`` would be left out of the wheel."""
    missing = [str(d.relative_to(ROOT)) for d in _source_dirs()
               if not (d / "__init__.py").is_file()]
    assert missing == []


def test_every_package_ships() -> None:
    expected = {".".join(d.relative_to(ROOT).parts) for d in _source_dirs()}
    assert "evaluation.experiments" in expected
    assert set(_shipped()["packages"]) == expected


def test_only_the_project_packages_ship() -> None:
    packages = set(_shipped()["packages"])
    assert {p.split(".")[0] for p in packages} == set(TOP_LEVEL)


def test_type_marker_ships() -> None:
    assert "py.typed" in _shipped()["package-data"][""]
    for top in TOP_LEVEL:
        assert (ROOT / top / "py.typed").is_file()


def test_console_script_module_ships() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module = project["scripts"]["ntp-bench"].split(":")[0]
    assert module.rsplit(".", 1)[0] in set(_shipped()["packages"])


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_doc_links_stay_in_the_repository() -> None:
    """Every relative link of README.md and docs/*.md names a file of the repository."""
    import re

    broken = []
    for page in _markdown_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor of the same page
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_no_reference_to_notes_outside_the_repository() -> None:
    """The theory a user needs is docs/theory.md, not a design note beside the checkout."""
    folders = (*TOP_LEVEL, "tests", "examples", "benchmarks")
    sources = [*_markdown_files(), *(p for d in folders for p in (ROOT / d).rglob("*.py"))]
    cited = [str(p.relative_to(ROOT)) for p in sources if p != Path(__file__).resolve()
             and "DESIGN.md" in p.read_text(encoding="utf-8")]
    assert cited == []
    assert (ROOT / "docs" / "theory.md").is_file()
