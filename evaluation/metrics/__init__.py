"""Task metrics beside the divergences: answer accuracy (:mod:`~evaluation.metrics.accuracy`),
path-star decision and path accuracies (:mod:`~evaluation.metrics.pathstar`) and expected
returns (:mod:`~evaluation.metrics.returns`)."""
