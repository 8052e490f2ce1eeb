"""The bench machinery: jobs and sweeps (:mod:`~evaluation.bench.sweep`), where they run
(:mod:`~evaluation.bench.backends`), the result store (:mod:`~evaluation.bench.store`),
summaries and worst cases (:mod:`~evaluation.bench.analysis`) and plots
(:mod:`~evaluation.bench.plots`)."""
