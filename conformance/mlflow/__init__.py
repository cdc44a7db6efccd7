"""MLflow's doors onto the core: traces in, assessments, scoring runs and an ``mlflow.genai`` scorer out.

* :mod:`conformance.mlflow.traces` — approved and audited records from MLflow traces (of evaluation runs or
  of an experiment), and verdicts logged back onto their traces as Feedback assessments.
* :mod:`conformance.mlflow.assessments` — verdicts and reviewers' sign-offs logged onto their traces.
* :mod:`conformance.mlflow.runs` — every ``score`` as an MLflow run (the build run's lineage is the registry's:
  :mod:`conformance.registry.lineage`).
* :mod:`conformance.mlflow.genai_scorer` — :func:`scorer`, for ``mlflow.genai.evaluate``.

The baselines themselves live in MLflow's model registry (:mod:`conformance.registry`). Importing this
package imports nothing heavy; each function imports MLflow when it runs.
"""

from __future__ import annotations

from typing import Any


def scorer(*args: Any, **kwargs: Any) -> Any:
    """An ``mlflow.genai`` scorer judging each row against the approved baseline of its cell
    (:func:`conformance.mlflow.genai_scorer.scorer`)."""
    from conformance.mlflow.genai_scorer import scorer as make

    return make(*args, **kwargs)


__all__ = ["scorer"]
