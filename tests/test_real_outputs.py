"""On real model outputs (MT-bench answers of 32 chat models, ../shared/data): skipped when absent."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from conformance.baseline.fit import SmallCalibrationWarning, build_baseline
from conformance.embedder import embed_inputs
from conformance.records import Record
from conformance.scoring import judge
from tests.conftest import SHARED_DATA

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SHARED_DATA.is_file(), reason=f"real outputs not found at {SHARED_DATA}")]


PROSE = ("writing", "roleplay", "humanities", "stem")


@pytest.fixture(scope="module")
def embedder(embedder, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The session's embedder behind an embedding cache of this module's own: the two scorers' runs embed the same
    answers, and the cache gives the embedder's own bits back (tests/test_embedding_cache.py), once."""
    from conformance.embedding_cache import CachedEmbedder

    return CachedEmbedder(embedder, path=tmp_path_factory.mktemp("real-outputs-cache") / "embeddings.db")


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
    approved_models = set(models[::4])  # 8 models' answers are the approved distribution
    # The approved input class: open-ended prose questions (MT-bench's writing, roleplay, humanities
    # and stem: 40 prompts). One MT-bench category alone has 10 prompts, too few: the calibration
    # uses one output per prompt, and alpha 0.05 needs at least 19 calibration prompts.
    prose = [r for r in turn1 if r["input_class"] in PROSE and r["model"] in approved_models]
    # 20 calibration prompts: at alpha 0.05 an output is flagged only if it is more unusual than
    # (nearly) every calibration prompt's outputs, so two odd approved outputs (rwkv-4-raven's
    # markdown outlines, combined scores 7.6 and 9.0 against a median under 3.3) would mask everything;
    # alpha 0.10 is what 20 prompts support usefully.
    # The even split gives 20 calibration prompts (level 2/21 = 0.095), which this test keeps: by default build
    # would keep 19 (0.10 exactly; measured then, knn_cosine flags 16 of the 76 other models' prose answers,
    # 0.21, above the 0.2 asserted below for 20: they are not outputs of the approved models, so no level holds
    # for them, and moving one prompt changes which answers are compared).
    with pytest.warns(SmallCalibrationWarning, match="only 20 distinct prompts"):
        baseline = build_baseline(_records(prose, "prose"), alpha=0.10, embedder=embedder, scorer=scorer,
                                  round_calibration=False)
    assert baseline.n_calibration_prompts == 20 and baseline.scorer["n_calibration_outputs"] == 160

    # Other models: answers to the calibration prompts (same class) vs answers to math prompts.
    cal_prompts = sorted({rid.split(":", 1)[1] for rid in baseline.calibration_record_ids})
    held_out = sorted(m for m in models if m not in approved_models)
    by_key = {(r["model"], r["prompt_id"]): r for r in turn1}
    same = _records([by_key[(held_out[(4 * i + j) % len(held_out)], prompt)]
                     for i, prompt in enumerate(cal_prompts) for j in range(4)], "prose")
    # An answer to another class's question in place of the answer: the prose prompt stays,
    # the output is another model's answer to a math question.
    math_answers = [r for r in turn1 if r["input_class"] == "math" and r["model"] not in approved_models]
    other = _records([{**r, "input": s_.input, "prompt_id": s_.extras["prompt_id"]}
                      for r, s_ in zip(math_answers, same)], "prose")
    emb_same = embedder.embed([r.output for r in same], progress=False)
    emb_other = embedder.embed([r.output for r in other], progress=False)
    def flag_rate(records: list[Record], embedded) -> tuple[float, np.ndarray]:
        inputs = embed_inputs(embedder, [r.input for r in records]) if scorer == "combined" else None
        verdicts = judge(baseline, "models:/t/1", records, embedded, scored_at="t", inputs=inputs)
        return float(np.mean([v.verdict == "out_of_bounds" for v in verdicts])), np.array([v.score for v in verdicts])

    (flag_same, score_same), (flag_other, score_other) = flag_rate(same, emb_same), flag_rate(other, emb_other)
    # The scores separate the two. Measured AUROC of the math answers against the prose answers:
    # knn_cosine 0.91, combined 0.97.
    auroc = float(np.mean(score_other[:, None] > score_same[None, :]))
    assert auroc >= (0.85 if scorer == "knn_cosine" else 0.92), auroc
    # Flags at alpha 0.10, measured: prose answers knn_cosine 0.075, combined 0.025; math answers
    # 0.70 and 0.50. Fewer than the ranking would allow: with 20 calibration prompts an output must
    # be more unusual than nearly every prompt's outputs, and two approved rwkv-4-raven answers in
    # Markdown outline form (headings no fit-part answer has) score far above everything else.
    assert flag_same <= 0.2, flag_same
    assert flag_other >= 0.4, flag_other


ARENA = SHARED_DATA.parent / "arena_answers.jsonl.gz"


@pytest.mark.skipif(not ARENA.is_file(), reason=f"arena answers not found at {ARENA}")
@pytest.mark.filterwarnings("ignore::conformance.baseline.fit.SmallCalibrationWarning")  # 80 approved prompts
def test_a_base_model_behind_a_chat_model_s_label_is_caught_as_a_batch(embedder) -> None:
    """arena-bench-v1: gpt-4-0314's baseline from 80 of its answers; a batch of 20 held-out prompts answered by
    llama-13b (a base model) under gpt-4-0314's label is out of bounds through the conditional batch test (caught
    in every batch of 10 or more in docs/validation.md, section 10), and gpt-4-0314's own answers to those prompts,
    scored the same way, are not flagged as a batch on this split."""
    from conformance.records import RecordSet
    from conformance.scoring import score_record_set

    with gzip.open(ARENA, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    bench = [r for r in rows if r["source"] == "arena-bench-v1" and r["output"].strip()]
    own = {r["prompt_id"]: r for r in bench if r["model"] == "gpt-4-0314"}
    base = {r["prompt_id"]: r for r in bench if r["model"] == "llama-13b"}
    prompts = sorted(set(own) & set(base))
    order = np.random.default_rng(21).permutation(len(prompts))
    held, approved = [prompts[i] for i in order[:20]], [prompts[i] for i in order[20:100]]

    def records(answers: dict, keys: list[str], prefix: str) -> list[Record]:
        return [Record(row=i + 1, record_id=f"{prefix}{k}", model_version="gpt-4-0314", input_class="arena",
                       input=answers[k]["input"], output=answers[k]["output"], extras={"prompt_id": k})
                for i, k in enumerate(keys)]

    baseline = build_baseline(records(own, approved, "a:"), alpha=0.05, embedder=embedder)
    assert baseline.spec.batch_test == "conditional" and len(baseline.batch_reference_prompt_keys or []) == 80

    def batch(answers: dict, prefix: str):  # type: ignore[no-untyped-def]
        return score_record_set(RecordSet(path="<arena>", rows=tuple(records(answers, held, prefix))),
                                lambda mv, ic: ("models:/gpt-4-0314/1", baseline), embedder=embedder,
                                progress=False).summaries[0]

    swapped, same = batch(base, "llama:"), batch(own, "own:")
    assert swapped.tests is not None and swapped.tests["test"] == "conditional"
    assert swapped.verdict == "out_of_bounds" and swapped.p_value is not None and swapped.p_value <= 0.01, \
        swapped.reason
    assert "shorter" in swapped.reason or "less about their inputs" in swapped.reason, swapped.reason
    assert same.verdict == "within_bounds", same.reason
