"""Streaming ``score``: records chunk by chunk, the whole-prompt reservoir of the batch tests, verdict files
written in parts, the ledger one chunk per transaction; all without the embedder (a fake one)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import conformance
from conformance.baseline.fit import build_baseline
from conformance.errors import InputFileError
from conformance.ledger import Ledger
from conformance.record_stream import stream_records
from conformance.files import source_sha256
from conformance.records import InvalidRow, Record, read_records
from conformance.scoring.reservoir import PromptReservoir, priority
from conformance.stats.two_sample import batch_tests
from conformance.verdict import write_verdicts
from conformance.verdict_files import ColumnPlan, Spool, VerdictWriter
from tests.test_stat_fdr import FakeEmbedder


def _approved(n_prompts: int, per_prompt: int) -> list[Record]:
    return [Record(row=i + 1, record_id=f"a{i}", model_version="m", input_class="c", input=f"q{i // per_prompt}",
                   output=f"0:{i}", extras={"prompt_id": f"p{i // per_prompt}"})
            for i in range(n_prompts * per_prompt)]


@pytest.fixture(scope="module")
def baseline():
    return build_baseline(_approved(120, 2), alpha=0.1, scorer="knn_cosine", embedder=FakeEmbedder())  # type: ignore[arg-type]


def _audited(n: int, *, shift_every: int = 9) -> list[dict]:
    rows = []
    for i in range(n):
        shift = 2 if i % shift_every == 0 else 0
        rows.append({"record_id": f"r{i}", "model_version": "m", "input_class": "c", "input": f"q{i // 3}",
                     "output": f"{shift}:{10_000 + i}", "prompt_id": f"x{i // 3}", "n": i if i % 4 else None})
    rows.append({"record_id": "bad", "model_version": "m", "input_class": "c", "input": "q"})  # no output
    rows.append({"record_id": "other", "model_version": "m2", "input_class": "c", "input": "q", "output": "0:1"})
    return rows


def _strip(rows: list[dict]) -> list[dict]:
    """Rows without ``scored_at`` and with scores to 12 significant digits: the matrix kernels may round a
    distance differently in the 16th digit for another number of rows (reconstruct compares to 1e-9)."""
    return [{k: (float(f"{v:.12g}") if k == "score" and v is not None else v) for k, v in r.items()
             if k != "scored_at"} for r in rows]


# -- reading chunk by chunk -------------------------------------------------------------------


def test_stream_gives_the_rows_of_a_whole_read(tmp_path: Path) -> None:
    rows = _audited(50)
    rows.insert(10, {"record_id": "r3", "model_version": "m", "input_class": "c", "input": "q", "output": "0:3"})
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.iloc[:20].to_parquet(folder / "part-0.parquet")
    frame.iloc[20:].to_parquet(folder / "part-1.parquet")
    for path in (jsonl, tmp_path / "a.csv", tmp_path / "a.parquet"):
        whole = read_records(path).rows
        streamed = [row for chunk in stream_records(path, chunk_size=7) for row in chunk]
        assert streamed == list(whole), path
        assert any("duplicate record_id, first used at row 4" in getattr(r, "reason", "") for r in streamed)
    from_folder = [row for chunk in stream_records(folder, chunk_size=6) for row in chunk]
    folder_digest = source_sha256(sorted(folder.iterdir()))
    assert from_folder == [r.from_source(folder_digest) if isinstance(r, InvalidRow) else r
                           for r in read_records(tmp_path / "a.parquet").rows]  # each names its own source
    assert stream_records(folder).total == len(rows)


def test_stream_source_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        stream_records(tmp_path / "missing.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="must hold .parquet files; found none"):
        stream_records(tmp_path / "empty")
    no_output = tmp_path / "no_output.jsonl"
    no_output.write_text("".join(json.dumps({"record_id": f"r{i}", "model_version": "m", "input_class": "c",
                                             "input": "q"}) + "\n" for i in range(5)))
    with pytest.raises(InputFileError, match="output appear in no row"):
        list(stream_records(no_output, chunk_size=2))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        stream_records(no_output, chunk_size=0)


# -- the reservoir ----------------------------------------------------------------------------


def test_reservoir_is_the_priority_prefix_whatever_the_order() -> None:
    outputs = [(f"p{i % 300}", i) for i in range(900)] + [(f"big{j}", j) for j in range(5) for _ in range(40)]
    kept = None
    for trial in range(4):
        order = outputs[:]
        random.Random(trial).shuffle(order)
        res = PromptReservoir(max_outputs=100, seed=3)
        for key, item in order:
            res.add(key, item)
        assert res.n_kept <= 100 and res.n_seen == len(outputs) and not res.complete
        got = sorted(res.kept())
        assert kept is None or got == kept
        kept = got
    # whole prompts only, and exactly the longest run of prompts in priority order that fits
    sizes: dict[str, int] = {}
    for key, _ in outputs:
        sizes[key] = sizes.get(key, 0) + 1
    ordered = sorted(sizes, key=lambda k: priority(3, k))
    prefix, total = [], 0
    for key in ordered:
        if total + sizes[key] > 100:
            break
        prefix.append(key)
        total += sizes[key]
    assert kept is not None and sorted({k for k, _ in kept}) == sorted(prefix)
    assert len(kept) == total


def test_reservoir_keeps_a_small_batch_whole_and_one_prompt_at_least() -> None:
    res = PromptReservoir(max_outputs=10, seed=0)
    for i in range(10):
        res.add(f"p{i}", i)
    assert res.complete and len(res.kept()) == 10
    one = PromptReservoir(max_outputs=3, seed=0)
    for i in range(8):
        one.add("only", i)
    assert one.n_kept == 8 and len(one.items) == 1


@pytest.mark.slow
def test_block_tests_on_a_reservoir_keep_their_level() -> None:
    """Null batches of 120 prompts x 3 outputs (a prompt effect makes its outputs alike), a reservoir of
    at most 60 outputs tested against 80 calibration prompts x 2: the rejection rate at alpha 0.1 stays
    within the 95 % interval of 0.1 or below it."""
    rng = np.random.default_rng(5)
    alpha, trials, rejections = 0.1, 300, 0
    for t in range(trials):
        cal_prompt = np.repeat(rng.normal(size=80), 2)
        cal = cal_prompt + 0.5 * rng.normal(size=160)
        cal_groups = [f"c{i // 2}" for i in range(160)]
        res = PromptReservoir(max_outputs=60, seed=t)
        effects = rng.normal(size=120)
        for i in range(360):
            res.add(f"b{i // 3}", effects[i // 3] + 0.5 * rng.normal())
        kept = res.kept()
        result = batch_tests(np.array([v for _, v in kept]), cal, groups=[k for k, _ in kept],
                             calibration_groups=cal_groups, seed=t, max_batch=res.n_kept)
        rejections += min(result.p_values.values()) <= alpha / 2
    rate = rejections / trials
    half = stats.norm.ppf(0.975) * np.sqrt(alpha / 2 * (1 - alpha / 2) / trials)
    # each of the two rank tests at alpha/2: Bonferroni's union bound gives at most alpha
    assert rate <= alpha + half, rate
    assert rate > 0.01  # the test can fail: it does reject under the null at about its level


# -- verdict files in parts -------------------------------------------------------------------


def _verdicts(baseline, **kw):
    return conformance.score(_audited(60), baselines=[baseline], embedder=FakeEmbedder(), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_writer_in_parts_writes_what_write_verdicts_writes(tmp_path: Path, baseline, suffix: str) -> None:
    verdicts = _verdicts(baseline, fdr=0.2).verdicts
    whole = tmp_path / f"whole{suffix}"
    write_verdicts(verdicts, whole)
    plan = ColumnPlan(fdr=True)
    unflagged = [v.__class__(**{**v.__dict__, "bh_flag": None}) for v in verdicts]
    for s in range(0, len(unflagged), 7):
        plan.add(unflagged[s:s + 7])
    parts = tmp_path / f"parts{suffix}"
    writer = VerdictWriter(parts, plan)
    for s in range(0, len(verdicts), 7):
        writer.write(verdicts[s:s + 7])
    assert not parts.exists()
    writer.commit()
    if suffix == ".parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(parts), pd.read_parquet(whole))
    else:
        assert parts.read_bytes() == whole.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_writer_abort_and_spool(tmp_path: Path, baseline) -> None:
    target = tmp_path / "v.jsonl"
    target.write_text("old\n")
    writer = VerdictWriter(target, ColumnPlan(fdr=False))
    writer.write(_verdicts(baseline).verdicts)
    writer.abort()
    assert target.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1
    verdicts = _verdicts(baseline).verdicts
    spool = Spool(folder=tmp_path)
    spool.write(verdicts[:10])
    spool.write(verdicts[10:])
    assert [v for chunk in spool.chunks(4) for v in chunk] == verdicts
    spool.close()
    assert len(list(tmp_path.iterdir())) == 1  # the spool is an anonymous file


# -- score, streamed ---------------------------------------------------------------------------


def test_chunked_score_equals_whole_score(tmp_path: Path, baseline) -> None:
    whole = _verdicts(baseline, fdr=0.2)
    for size in (1, 7, 1000):
        out = tmp_path / f"v{size}.jsonl"
        part = _verdicts(baseline, fdr=0.2, chunk_size=size, out=out, keep_verdicts=False)
        assert part.verdicts == [] and part.counts == whole.counts and part.n == 62
        got = [json.loads(line) for line in out.read_text().splitlines()]
        assert _strip(got) == _strip([v.to_dict() for v in whole.verdicts])
        assert [s.to_dict() for s in part.summaries] == [s.to_dict() for s in whole.summaries]
    assert whole.summaries[0].tests is not None
    assert whole.summaries[0].tests["reservoir"] | {} == {
        "max_outputs": 500, "seed": 0, "prompts": 20, "outputs": 60, "of_outputs": 60,
        "unit": "whole prompts, by seeded hash of the key"}


def test_large_group_is_tested_on_a_reservoir_and_says_so(baseline) -> None:
    rows = _audited(700, shift_every=10**9)
    result = conformance.score(rows, baselines=[baseline], embedder=FakeEmbedder(), chunk_size=100)  # type: ignore[arg-type]
    tests = result.summaries[0].tests
    assert result.summaries[0].model_version == "m" and tests is not None and tests["n_batch"] == 700
    assert tests["reservoir"]["of_outputs"] == 700 and 495 <= tests["reservoir"]["outputs"] <= 500
    assert "a seeded sample of whole prompts" in result.summaries[0].reason
    again = conformance.score(rows[::-1], baselines=[baseline], embedder=FakeEmbedder())  # type: ignore[arg-type]
    (same,) = [s for s in again.summaries if s.model_version == "m"]
    assert same.p_value == result.summaries[0].p_value  # the order of the stream changes nothing


def test_ledger_gets_one_transaction_per_chunk_and_each_verdict_once(tmp_path: Path, baseline) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = _verdicts(baseline, ledger=url, chunk_size=10, keep_verdicts=False)
    assert first.ledger is not None and first.ledger.added == 62 and first.ledger.already_recorded == 0
    with Ledger(url) as book:
        runs = {e["run_id"] for e in book.query_rows()}
        recorded = {e["recorded_at"] for e in book.query_rows()}
    assert len(runs) == 1 and len(recorded) == 7  # one run, seven transactions of at most 10
    again = _verdicts(baseline, ledger=url, chunk_size=25)
    assert again.ledger is not None and (again.ledger.added, again.ledger.already_recorded) == (0, 62)
    assert again.ledger.head == first.ledger.head


# -- resume after kill -9 ------------------------------------------------------------------------

WORKER = Path(__file__).with_name("stream_worker.py")


def _workdir(root: Path, baseline, name: str) -> Path:
    work = root / name
    work.mkdir()
    baseline.save(work / "baseline")
    (work / "audited.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _audited(95)))
    return work


def _run(work: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WORKER), str(work), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _cached_texts(work: Path) -> int:
    db = work / "conformance_store" / "embeddings.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute("select count(*) from embeddings").fetchone()[0])
        except sqlite3.OperationalError:  # the table is being created
            return 0


def _kill_when(proc: subprocess.Popen[str], ready) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the moment to kill it"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["embedding", "recording", "random"])
def test_rerun_after_kill_9_continues_and_gives_the_uninterrupted_file(tmp_path: Path, baseline,
                                                                        moment: str) -> None:
    reference = _workdir(tmp_path, baseline, "reference")
    out, _ = _run(reference).communicate(timeout=120)
    assert "done" in out
    work = _workdir(tmp_path, baseline, "work")
    log = work / "embedded.log"
    if moment == "embedding":  # pass 1, after some chunks were embedded and cached
        proc = _run(work, "--slow-embed", "0.2")
        _kill_when(proc, lambda: _cached_texts(work) >= 30)
    elif moment == "recording":  # pass 2: some chunks are in the ledger, the verdicts file is not written
        proc = _run(work, "--slow-append", "0.3")
        assert proc.stdout is not None
        _kill_when(proc, lambda: "appended" in (proc.stdout.readline() if proc.stdout else ""))
        assert not (work / "verdicts.jsonl").exists()
    else:
        proc = _run(work, "--slow-embed", "0.05", "--slow-append", "0.05")
        time.sleep(random.Random(7).uniform(1.0, 3.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    cached = _cached_texts(work)
    before = len(log.read_text().splitlines()) if log.exists() else 0
    out, err = _run(work).communicate(timeout=120)
    assert "done" in out, err
    embedded_again = log.read_text().splitlines()[before:]
    rows = [json.loads(line) for line in (work / "audited.jsonl").read_text().splitlines()]
    distinct = {r["output"] for r in rows if r["model_version"] == "m" and "output" in r}
    # what the cache held at the kill is not embedded again
    assert len(set(embedded_again)) == len(embedded_again) <= len(distinct) - cached
    if moment == "recording":
        assert embedded_again == []
    got = [json.loads(line) for line in (work / "verdicts.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (reference / "verdicts.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "scored_at"} for r in got] == \
        [{k: v for k, v in r.items() if k != "scored_at"} for r in want]
    assert json.loads((work / "summary.json").read_text()) == json.loads((reference / "summary.json").read_text())
    with Ledger(f"sqlite:///{work / 'ledger.db'}") as book:
        rows = book.query_rows()
        assert len(rows) == len(got) == 97 and len({r["record_id"] for r in rows}) == 97
        from conformance.ledger import verify

        assert verify(book).ok
    assert [p.name for p in work.iterdir() if p.name.startswith(".")] == []


def test_seen_ids_remember_first_rows_across_flushes() -> None:
    from conformance.record_stream import SeenIds

    seen = SeenIds(flush_every=3)
    for row in range(1, 11):
        seen[f"id{row}"] = row
    assert all(f"id{row}" in seen and seen[f"id{row}"] == row for row in range(1, 11))
    assert "id11" not in seen and 5 not in seen
    with pytest.raises(KeyError):
        seen["nope"]


def test_each_baseline_is_scored_with_the_embedder_of_its_fingerprint(baseline) -> None:
    """A chooser gives each cell the embedder its baseline's fingerprint names (as ``embedder_for`` does
    for the backends); an embedder of another fingerprint is refused before anything is judged."""
    from dataclasses import replace as dc_replace

    from conformance.errors import EmbedderMismatchError
    from conformance.scoring.stream import StreamScorer

    class Other(FakeEmbedder):
        fingerprint = {"model": "fake", "source": "tests", "backend": {"name": "other"}}

    other_baseline = dc_replace(baseline, model_version="m2", embedder=Other.fingerprint)
    used: list[str] = []

    def choose(fingerprint):  # type: ignore[no-untyped-def]
        used.append(fingerprint.get("backend", {}).get("name", "plain"))
        return Other() if "backend" in fingerprint else FakeEmbedder()

    table = {("m", "c"): ("a", baseline), ("m2", "c"): ("b", other_baseline)}
    scorer = StreamScorer(lambda mv, ic: table[(mv, ic)], embedder=choose)
    from conformance.record_stream import stream_records

    verdicts = [v for rows in stream_records(_audited(20), chunk_size=8) for v in scorer.score_chunk(rows)]
    assert sorted(used) == ["other", "plain"]  # once per cell
    assert {v.model_version for v in verdicts if v.p_value is not None} == {"m", "m2"}
    wrong = StreamScorer(lambda mv, ic: table[(mv, ic)], embedder=FakeEmbedder())
    with pytest.raises(EmbedderMismatchError):
        for rows in stream_records(_audited(20), chunk_size=8):
            wrong.score_chunk(rows)


def test_progress_is_a_log_line_off_a_terminal_and_nothing_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from conformance.progress import Progress

    log = io.StringIO()
    with Progress(desc="scoring", total=100, enabled=None, every=0.0, stream=log) as p:
        assert p.mode == "lines"
        p.update(40)
        p.update(60)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("scoring: 40 of 100 records (40 %)") and "ETA" in lines[0]
    assert lines[-1].startswith("scoring: 100 of 100 records in 0:00:00")
    quiet = io.StringIO()
    with Progress(desc="scoring", total=100, enabled=False, every=0.0, stream=quiet) as p:
        p.update(100)
    assert quiet.getvalue() == ""
    short = io.StringIO()
    with Progress(desc="scoring", total=10, enabled=None, stream=short) as p:  # a short job's log stays quiet
        p.update(10)
    assert short.getvalue() == ""


# -- the rank tests on every output of a large group ----------------------------------------------


def test_rank_tests_on_every_output_see_a_shift_and_not_the_order() -> None:
    from conformance.stats.block_ranks import block_rank_p_values

    rng = np.random.default_rng(1)
    cal = rng.normal(size=200)
    cal_groups = [f"c{i // 2}" for i in range(200)]
    codes = np.repeat(np.arange(400, dtype=np.uint32) * 7919, 3)
    shifted = rng.normal(size=1200) + 0.5
    p, n_x, n_y = block_rank_p_values(shifted, codes, cal, cal_groups, n_permutations=1000, seed=0)
    assert (n_x, n_y) == (400, 100) and p["mann_whitney"] == pytest.approx(1 / 1001)
    order = rng.permutation(1200)
    again, _, _ = block_rank_p_values(shifted[order], codes[order], cal, cal_groups, n_permutations=1000, seed=0)
    assert again == p
    with pytest.raises(ValueError, match="n_permutations must be an integer >= 1000"):
        block_rank_p_values(shifted, codes, cal, cal_groups, n_permutations=10, seed=0)


@pytest.mark.slow
def test_rank_tests_on_every_output_keep_their_level() -> None:
    """Null batches of 150 prompts x 4 outputs (alike within a prompt) against 80 calibration prompts x 2, whole
    prompts permuted: each rank test rejects at alpha/2 = 0.05 within its 95 % interval or below."""
    from conformance.stats.block_ranks import block_rank_p_values

    rng = np.random.default_rng(9)
    trials, level = 300, 0.05
    rejections = {"mann_whitney": 0, "kolmogorov_smirnov": 0}
    for t in range(trials):
        cal = np.repeat(rng.normal(size=80), 2) + 0.5 * rng.normal(size=160)
        batch = np.repeat(rng.normal(size=150), 4) + 0.5 * rng.normal(size=600)
        p, _, _ = block_rank_p_values(batch, np.repeat(np.arange(150, dtype=np.uint32), 4), cal,
                                      [f"c{i // 2}" for i in range(160)], n_permutations=1000, seed=t)
        for name in rejections:
            rejections[name] += p[name] <= level
    half = stats.norm.ppf(0.975) * np.sqrt(level * (1 - level) / trials)
    for name, count in rejections.items():
        assert count / trials <= level + half, (name, count / trials)
    assert sum(rejections.values()) > 0  # it does reject under the null, at about its level


def test_a_large_group_runs_the_rank_tests_on_every_output(baseline) -> None:
    rows = _audited(700, shift_every=10**9)
    result = conformance.score(rows, baselines=[baseline], embedder=FakeEmbedder(), chunk_size=100)  # type: ignore[arg-type]
    tests = result.summaries[0].tests
    assert tests is not None and tests["n_batch"] == 700 and tests["permutation_unit"] == "group"
    assert any("rank tests used 700 outputs" in note for note in tests["notes"])
    assert "the rank tests used every output" in result.summaries[0].reason
    assert any("MMD and energy used a seeded sample of whole prompts" in note for note in tests["notes"])
    assert set(tests["p_values"]) == {"mann_whitney", "kolmogorov_smirnov", "mmd", "energy"}


def test_the_rank_sample_beyond_its_limit_is_whole_prompts_in_priority_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.scoring import groups

    monkeypatch.setattr(groups, "RANK_OUTPUTS", 10)
    codes = np.array([5, 1, 9, 1, 5, 3, 3, 3, 9, 7, 7, 2, 2, 2, 2], dtype=np.uint32)
    values, kept = groups._rank_sample(np.arange(15, dtype=np.float64), codes)
    # prompts by code: 1 (2 outputs), 2 (4), 3 (3) fit in 10; 5 would make 11
    assert sorted(set(kept.tolist())) == [1, 2, 3] and len(values) == 9
    assert values.tolist() == [1.0, 3.0, 5.0, 6.0, 7.0, 11.0, 12.0, 13.0, 14.0]


def test_a_jsonl_stream_counts_its_rows_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" + ("\n" if i % 3 == 0 else "") for i, r in enumerate(_audited(10))))
    assert stream_records(path, count=True).total == 12 and stream_records(path).total is None
