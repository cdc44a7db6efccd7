"""The MLflow pyfunc wrapper of a baseline: ``predict`` scores a DataFrame of records.

Logged as a model *from code* (``_mlflow_model.py``), so that nothing is
pickled: the model is this class plus the baseline folder (JSON and ``.npz``).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from conformance.baseline import Baseline, load_baseline
from conformance.records import RecordSet, validate_row

OUTPUT_COLUMNS = ("record_id", "verdict", "p_value", "score", "alpha", "reason")


def example_output() -> pd.DataFrame:
    return pd.DataFrame([{"record_id": "example-1", "verdict": "within_bounds", "p_value": 0.5,
                          "score": 0.3, "alpha": 0.05, "reason": "..."}])


class BaselineModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """Scores records against one baseline; rows of other cells get ``no_baseline``."""

    baseline: Baseline

    def load_context(self, context: Any) -> None:
        self.baseline = load_baseline(context.artifacts["baseline"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from conformance.scoring import score_record_set

        seen: dict[str, int] = {}
        rows = tuple(
            validate_row(i, {k: v for k, v in raw.items() if v is not None}, seen)
            for i, raw in enumerate(model_input.to_dict(orient="records"), start=1)
        )
        cell = (self.baseline.model_version, self.baseline.input_class)
        uri = f"baseline digest {self.baseline.digest}"

        def resolve(model_version: str, input_class: str) -> tuple[str, Baseline] | str:
            if (model_version, input_class) == cell:
                return uri, self.baseline
            return f"this baseline is for {cell}, not for ({model_version}, {input_class})"

        result = score_record_set(RecordSet(path="<dataframe>", rows=rows), resolve, progress=False)
        return pd.DataFrame([{c: v.to_dict()[c] for c in OUTPUT_COLUMNS} for v in result.verdicts],
                            columns=list(OUTPUT_COLUMNS))
