"""The build run's lineage: what a baseline was built from, logged in the run that registers it.

Inside the build run (see :meth:`conformance.registry.Registry.register`): the cell's approved records as an
``mlflow.data`` dataset input (context ``approved``), the evaluation runs as a tag, and the calibration scores as
an SVG strip plot with the numbers beside it. MLflow keeps at most 36 characters of a dataset's digest, so the
dataset's digest is the baseline's dataset digest cut to that length, and the input's tag
``conformance.dataset_digest`` holds it whole.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conformance.baseline.format import Baseline
    from conformance.records import Record

#: MLflow keeps at most this many characters of a dataset's digest.
DATASET_DIGEST_CHARS = 36


def log_build_lineage(baseline: Baseline, approved: Sequence[Record] | None, *, name: str) -> None:
    """Inside the active build run of the registered model ``name``: the approved records as an ``mlflow.data``
    dataset input named ``<name>.approved`` (digest: the
    baseline's dataset digest, cut to MLflow's length; the whole one in the input's tags), the evaluation runs as
    a tag, and the calibration scores as ``calibration_scores.svg`` and ``calibration_scores.json``."""
    import mlflow
    import pandas as pd
    from mlflow.data.pandas_dataset import from_pandas

    from conformance.report import strip_plot

    lineage = baseline.lineage
    digest = str(lineage.get("dataset_digest", ""))
    if approved:
        frame = pd.DataFrame([{"record_id": r.record_id, "prompt_id": r.extras.get("prompt_id"),
                               "model_version": r.model_version, "input_class": r.input_class,
                               "input": r.input, "output": r.output} for r in approved])
        source = str(lineage.get("source_file") or "")
        hexdigest = digest.split(":", 1)[-1]
        where = {"source": source} if source and Path(source).exists() else {}  # else MLflow names the code
        dataset = from_pandas(frame, name=f"{name}.approved", digest=hexdigest[:DATASET_DIGEST_CHARS] or None,
                              **where)
        mlflow.log_input(dataset, context="approved",
                         tags={"conformance.dataset_digest": digest, "conformance.source": source or "<memory>"})
    runs = list(lineage.get("eval_run_ids") or [])
    mlflow.set_tag("conformance.eval_run_ids", ",".join(runs) if runs else "none")
    scores = [float(s) for s in baseline.calibration_scores.tolist()]
    svg = strip_plot(scores, [])
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "calibration_scores.svg"
        plot.write_text(svg, encoding="utf-8")
        data = Path(tmp) / "calibration_scores.json"
        data.write_text(json.dumps({"model_version": baseline.model_version, "input_class": baseline.input_class,
                                    "alpha": baseline.alpha, "calibration_scores": scores}, indent=1) + "\n",
                        encoding="utf-8")
        mlflow.log_artifact(str(plot))
        mlflow.log_artifact(str(data))
