"""The methods behind :func:`evaluation.divergence`: exact dynamic programs over finite-state
laws (:mod:`~evaluation.methods.finite_state_dp`) and chunk tables
(:mod:`~evaluation.methods.chunk_dp`), sufficient statistics of count laws
(:mod:`~evaluation.methods.sufficient_stats`), enumeration of short horizons
(:mod:`~evaluation.methods.enumeration`), deterministic experts
(:mod:`~evaluation.methods.deterministic`), Monte Carlo with standard errors
(:mod:`~evaluation.methods.monte_carlo`), and checked round-off
(:mod:`~evaluation.methods.roundoff`). :mod:`evaluation.divergences` picks one per pair."""
