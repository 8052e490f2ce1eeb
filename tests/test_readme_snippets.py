"""The snippets of docs/sb3-imitation.md (the SB3 / imitation guide) run as written."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "docs" / "sb3-imitation.md"
SECTION = "# Use with SB3 / imitation"


def _snippets() -> list[str]:
    text = README.read_text()
    assert SECTION in text
    section = text.split(SECTION, 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_section_has_snippets() -> None:
    blocks = _snippets()
    assert len(blocks) >= 4
    assert sum("minari" in block for block in blocks) == 1


def test_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # files the snippets write land here
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    blocks = _snippets()
    has_minari = True
    try:
        import minari  # noqa: F401
    except ImportError:
        has_minari = False
    namespace: dict = {"__name__": "readme"}
    threads = torch.get_num_threads()
    try:
        for block in blocks:
            if "minari" in block and not has_minari:
                continue
            exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)  # a snippet sets it for the process
    assert (tmp_path / "bc.npz").is_file()
    # "the same return, ± s.e.": SB3's 64 episodes against the exact expected return
    from evaluation.metrics.returns import expected_return

    exact = expected_return(namespace["task"], namespace["bc"], method="enumerate")
    assert abs(namespace["mean"] - exact.mean) < 4 * namespace["std"] / math.sqrt(64)
    if not has_minari:
        pytest.skip("the [minari] extra is not installed: its snippet was not run")


def test_readme_tour_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's short tour runs as written and scores the fit it makes."""
    monkeypatch.chdir(tmp_path)
    text = (README.parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "the README has no python snippet"
    namespace: dict = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    row = namespace["score"](namespace["task"], namespace["policy"])
    assert row["eval_method"] == "dp"
    # logloss is proper: its fit is a class member, so the best in class is no worse than it
    assert row["best_in_class_hellinger2"] <= row["hellinger2"] * (1 + 1e-9)
    assert row["c_apx"] >= 1 - 1e-9
