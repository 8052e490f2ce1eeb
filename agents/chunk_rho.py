"""ChunkRho (``chunk-rho:K``): the rho tournament with per-chunk conditional log-likelihoods.

``pihat = argmin_pi max_pi' sum_i sum_j tanh((l_pi'(o_ij | x, prefix) - l_pi(o_ij | x,
prefix)) / 4)`` over the chunks ``j`` of ``K`` tokens of each sequence ``i`` (chunk 0 starts
at position 0; the last chunk is shorter when ``K`` does not divide ``H``). The candidates are
the rho-estimator's (:class:`agents.rho_estimator.RhoEstimator`: the finite class, the logit
grid of the i.i.d. binary class with its refinements, or LogLossBC's and RobustBC's fits).

Each chunk pays a *bounded* loss (``|tanh| <= 1``), so the objective decomposes over
``ceil(H / K)`` chunk decisions: ``K = 1`` is a bounded token-level (NTP-style) objective,
``K = H`` is the sequence-level rho-estimator (``rho``). Our reading of the paper's
mechanism (docs/theory.md, The learners; ours): the worst case over instances makes such an
objective pay the barrier once per decision, so worst-case ``C_apx ~ H / K``.

Population fits are exact where :func:`agents.tournament.population_statistics` can build
the law of the candidates' chunk log-likelihoods (a finite-state expert and candidates:
atoms per chunk phase and window state, at most :data:`agents.tournament.MAX_ATOMS`, with
the i.i.d. states' remaining tokens in closed form; a count-law expert and i.i.d. binary
candidates: counts of ones per chunk); otherwise they run on ``population_samples`` expert
sequences. ``info["tournament"]`` says which. On FiniteClassBarrier and MixtureProduct a
population fit takes well under 2 s at H = 4096 for every K
(``benchmarks/bench_barrier_family.py --speed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.rho_estimator import RhoEstimator, check_tournament_chunk_size


@dataclass
class ChunkRho(RhoEstimator):
    """The chunked rho tournament with chunk size ``chunk_size`` (registry ``chunk-rho:K``)."""

    chunk_size: int = 1
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        check_tournament_chunk_size(self.chunk_size)
        self.name = f"chunk-rho:{int(self.chunk_size)}"


__all__ = ["ChunkRho"]
