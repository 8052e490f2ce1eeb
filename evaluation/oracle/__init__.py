"""The best-in-class search: ``min over the learner class of D_H^2(expert, model)``.

:func:`best_in_class` (:mod:`~evaluation.oracle.search`) runs many batched starts on the
exact objective; :mod:`~evaluation.oracle.bhattacharyya_grad` gives its value and gradient
by forward-backward, :mod:`~evaluation.oracle.batched_minimize` the batched L-BFGS.
"""

from evaluation.oracle.search import OracleResult, best_in_class

__all__ = ["OracleResult", "best_in_class"]
