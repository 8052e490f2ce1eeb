"""What a reader sees in the figures: labels for identical curves, grid values in titles,
tick labels on short log ranges, no single-point chunk plot."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pandas as pd

from evaluation.bench import plots
from ntp_envs.mixture_product import DEFAULTS as MIX_DEFAULTS

MIX = "ntp_envs/MixtureProduct-v0"
BARRIER = "ntp_envs/FiniteClassBarrier-v0"


def _summary(curves: dict[str, list[float]], env_kwargs: str = "{}") -> pd.DataFrame:
    return pd.concat([pd.DataFrame({
        "env_id": MIX, "env_kwargs": env_kwargs, "agent": agent, "n_train": 0,
        "horizon": [4, 8, 16], "hellinger2_mean": values, "hellinger2_se": 0.0,
        "c_apx_mean": [v / 0.01 for v in values], "c_apx_se": 0.0,
        "best_in_class_hellinger2_mean": 0.01}) for agent, values in curves.items()])


def _figures(monkeypatch) -> list:
    figures: list = []
    monkeypatch.setattr(plots, "save_figure",
                        lambda fig, path, mode=None: figures.append(fig) or path)
    return figures


def test_a_curve_equal_to_another_says_so(tmp_path, monkeypatch) -> None:
    figures = _figures(monkeypatch)
    same = [0.02, 0.04, 0.08]
    plots.plot_divergence_vs_horizon(
        _summary({"logloss": same, "robust": same, "rho": [0.02, 0.021, 0.0205]}),
        tmp_path / "p.png")
    labels = figures[0].axes[0].get_legend_handles_labels()[1]
    assert "robust (population) = logloss here" in labels
    assert "logloss (population)" in labels and "rho (population)" in labels


def test_instance_titles_name_grid_values_at_their_default(tmp_path, monkeypatch) -> None:
    figures = _figures(monkeypatch)
    plots.plot_divergence_vs_horizon(_summary({"logloss": [0.1, 0.2, 0.3]}), tmp_path / "p.png",
                                     grids={MIX: ("weight",)})
    title = figures[0].axes[0].get_title()
    assert f"weight={MIX_DEFAULTS['weight']}" in title and "(defaults)" not in title


def test_a_short_log_range_keeps_tick_labels() -> None:
    fig, ax = plt.subplots()
    ax.set_yscale("log")
    ax.plot([1, 2], [0.3, 0.6])
    ax.set_ylim(0.3, 0.6)  # no power of ten inside: no major tick
    plots.log_y_labels(ax)
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.yaxis.get_ticklabels(which="both") if t.get_text()]
    assert shown, "no y tick label on a range below a decade"
    plt.close(fig)


def _worst(chunks: list[int]) -> pd.DataFrame:
    family = json.dumps({"grid": {"bias": [0.01, 0.1]}, "kwargs": {}})
    return pd.DataFrame({
        "env_id": BARRIER, "family": family, "agent": [f"chunk-rho:{k}" for k in chunks],
        "horizon": 16, "n_train": 0, "instances": 2, "worst_c_apx": [16.0 / k for k in chunks]})


def test_the_chunk_plot_needs_two_chunk_sizes(tmp_path) -> None:
    one = plots.plot_worst_case(_worst([4]), tmp_path / "h.png", tmp_path / "k.png")
    assert [p.name for p in one] == ["h.png"] and not (tmp_path / "k.png").exists()
    two = plots.plot_worst_case(_worst([2, 4]), tmp_path / "h2.png", tmp_path / "k2.png")
    assert [p.name for p in two] == ["h2.png", "k2.png"]


def test_the_summary_names_a_grid_value_at_its_default(tmp_path, capsys) -> None:
    from evaluation.cli import main
    from ntp_envs.finite_class_barrier import DEFAULTS

    default = DEFAULTS["bias"]
    assert main(["sweep", "--env", BARRIER, "--env-grid", json.dumps({"bias": [0.01, default]}),
                 "--agents", "logloss", "--horizons", "4", "--seeds", "1", "--population",
                 "--backend", "serial", "--oracle-starts", "1", "--quiet",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert f'"bias":{default}' in out and '"bias":0.01' in out
