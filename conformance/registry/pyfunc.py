"""The MLflow pyfunc wrapper of a baseline: ``predict`` scores a DataFrame of records.

Logged as a model *from code* (``_mlflow_model.py``), so that nothing is
pickled: the model is this class plus the baseline folder (JSON and ``.npz``),
and it carries the package's code (see ``Registry.register``).
``predict`` is a thin layer over :func:`conformance.score` with the baseline given
in memory: no registry, no ledger.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from conformance.baseline.format import Baseline, load_baseline
from conformance.registry.signature import OUTPUT_COLUMNS


class BaselineModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """Scores records against one baseline; rows of other cells get ``no_baseline``."""

    baseline: Baseline

    def load_context(self, context: Any) -> None:
        self.baseline = load_baseline(context.artifacts["baseline"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from conformance.api import score

        result = score(model_input, baselines=[self.baseline], ledger=False, progress=False)
        frame = result.to_pandas()
        return frame.reindex(columns=list(OUTPUT_COLUMNS))
