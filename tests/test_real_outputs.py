"""On real model outputs (MT-bench answers of 32 chat models, ../shared/data): skipped when absent."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from conformance.build import SmallCalibrationWarning, build_baseline, embed_inputs
from conformance.records import Record
from conformance.scoring import judge
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_file(), reason=f"real outputs not found at {SHARED_DATA}")


def _records(rows: list[dict], cls: str) -> list[Record]:
    return [Record(row=i + 1, record_id=f"{r['model']}:{r['prompt_id']}", model_version="mt-bench-pool",
                   input_class=cls, input=r["input"], output=r["output"], extras={"prompt_id": r["prompt_id"]})
            for i, r in enumerate(rows)]


@pytest.mark.parametrize("scorer", ["knn_cosine", "combined"])
def test_answers_to_another_input_class_are_flagged(embedder, scorer: str) -> None:
    with gzip.open(SHARED_DATA, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    turn1 = [r for r in rows if r["prompt_id"].endswith("turn1")]
    models = sorted({r["model"] for r in turn1})
    approved_models = set(models[::4])  # 8 models' writing answers are the approved distribution
    writing = [r for r in turn1 if r["input_class"] == "writing" and r["model"] in approved_models]
    with pytest.warns(SmallCalibrationWarning, match="40 calibration outputs"):
        baseline = build_baseline(_records(writing, "writing"), alpha=0.05, embedder=embedder, scorer=scorer)
    assert baseline.n_calibration >= 19

    # Other models: answers to the calibration prompts (same class) vs answers to math prompts.
    cal_prompts = {rid.split(":", 1)[1] for rid in baseline.calibration_record_ids}
    held_out = [r for r in turn1 if r["model"] not in approved_models]
    same = _records([r for r in held_out if r["prompt_id"] in cal_prompts][:40], "writing")
    # An answer to another class's question in place of the answer: the writing prompt stays,
    # the output is another model's answer to a math question.
    math_answers = [r for r in held_out if r["input_class"] == "math"]
    other = _records([{**r, "input": s_.input, "prompt_id": s_.extras["prompt_id"]}
                      for r, s_ in zip(math_answers, same)], "writing")
    emb_same = embedder.embed([r.output for r in same], progress=False)
    emb_other = embedder.embed([r.output for r in other], progress=False)
    def flag_rate(records: list[Record], embedded) -> float:
        inputs = embed_inputs(embedder, [r.input for r in records]) if scorer == "combined" else None
        verdicts = judge(baseline, "models:/t/1", records, embedded, scored_at="t", inputs=inputs)
        return float(np.mean([v.verdict == "out_of_bounds" for v in verdicts]))

    flag_same, flag_other = flag_rate(same, emb_same), flag_rate(other, emb_other)
    # Measured (flag rate of 40 writing answers of other models; of 40 math answers to writing
    # prompts): knn_cosine 0.0 and 0.85, combined 0.05 and 0.875.
    assert flag_same <= 0.15, flag_same
    assert flag_other >= 0.8, flag_other
