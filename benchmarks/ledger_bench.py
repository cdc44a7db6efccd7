"""Benchmark of the verdict ledger: appends per second (in batches), an idempotent re-run, and verify time.

Appends ``--entries`` realistic verdicts (a ~900-character output, the record's optional fields, a
batch summary) in batches of ``--batch`` into a fresh SQLite file in a temporary folder and, when
``--postgres`` is reachable, a fresh schema there (dropped afterwards); then verifies each whole chain.
Needs no data. Cost: one to three minutes for SQLite at the default 100,000 entries on two cores, about
as long on PostgreSQL; ``--entries 2000`` takes seconds. Prints one JSON line per backend and writes them to
``ledger.json`` in ``--out``; figures and discussion in docs/ledger.md.

    python -m benchmarks.ledger_bench --entries 100000 --batch 1000 --out results/ledger
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

from conformance.ledger import Ledger, verify
from conformance.verdict import GroupSummary, Verdict

OUTPUT = ("Hello Sam, I'm sorry your order arrived damaged. I can see order MF-3329376 on your account. "
          "Please reply with a photo of the damage and I'll process a refund of £39.00 as soon as we receive it. ") * 4


def verdicts(start: int, n: int) -> list[Verdict]:
    out = []
    for i in range(start, start + n):
        record = {"record_id": f"rec-{i:08d}", "model_version": "support-bot-3.2", "input_class": "refund_request",
                  "input": f"My pillow arrived damaged. Order MF-{i:07d}. I'd like a refund please.",
                  "output": OUTPUT + str(i), "timestamp": "2026-06-16T09:00:23Z", "policy_id": "support-policy",
                  "policy_version": "2026.2", "training_data_version": "td-2026-05",
                  "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512, "seed": i},
                  "intent": "damaged_item", "metadata": {"channel": "app", "locale": "en-GB"}}
        out.append(Verdict(
            row=i + 1, record_id=str(record["record_id"]), model_version="support-bot-3.2",
            input_class="refund_request",
            verdict="within_bounds", reason="Compared with 412 approved outputs ... within bounds.",
            p_value=0.4 + (i % 100) / 1000, score=0.2 + (i % 97) / 1000, alpha=0.05,
            baseline="models:/conformance.support-bot-3.2.refund_request/3", baseline_digest="9" * 64,
            test="split-conformal p-value on knn-cosine (k=5) score", nearest=("appr-1", "appr-2", "appr-3"),
            embedder="0123456789abcdef", code_version="0.1.0", scored_at="2026-06-16T09:05:00+00:00", record=record))
    return out


SUMMARY = GroupSummary("support-bot-3.2", "refund_request", 1000, {"within_bounds": 1000}, 0.41, "within_bounds",
                       "rank test", "models:/conformance.support-bot-3.2.refund_request/3", 0.05, "batch within bounds")


def bench(url: str, entries: int, batch: int) -> dict[str, object]:
    with Ledger(url) as ledger:
        prepared = [verdicts(s, min(batch, entries - s)) for s in range(0, entries, batch)]
        start = time.perf_counter()
        for part in prepared:
            ledger.append(part, summaries=[SUMMARY])
        append_s = time.perf_counter() - start
        start = time.perf_counter()
        again = ledger.append(prepared[0], summaries=[SUMMARY])  # an idempotent re-run of one batch
        rerun_s = time.perf_counter() - start
        start = time.perf_counter()
        report = verify(ledger)
        verify_s = time.perf_counter() - start
    assert report.ok and report.count == entries and again.added == 0
    return {"backend": url.split(":")[0], "entries": entries, "batch": batch,
            "append_s": round(append_s, 2), "appends_per_s": round(entries / append_s),
            "rerun_batch_s": round(rerun_s, 3), "verify_s": round(verify_s, 2),
            "verified_per_s": round(entries / verify_s)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ledger_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000, help="verdicts appended (default %(default)s)")
    parser.add_argument("--batch", type=int, default=1000, help="verdicts per append (default %(default)s)")
    parser.add_argument("--postgres", default=os.environ.get("CONFORMANCE_TEST_POSTGRES",
                                                              "postgresql://postgres@127.0.0.1:5432/test"),
                        help="PostgreSQL URL (default $CONFORMANCE_TEST_POSTGRES or a local server); skipped when "
                             "unreachable")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder ledger.json is written to")
    args = parser.parse_args()
    lines: list[dict[str, object]] = [{"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                                  f"Python {platform.python_version()}",
                                       "load_average": os.getloadavg()}]
    print(json.dumps(lines[-1]))
    with tempfile.TemporaryDirectory() as tmp:
        lines.append(bench("sqlite:///" + str(Path(tmp) / "ledger.db"), args.entries, args.batch))
        print(json.dumps(lines[-1]), flush=True)
    lines.append(bench_postgres(args.postgres, args.entries, args.batch))
    print(json.dumps(lines[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ledger.json").write_text(json.dumps(lines, indent=1), encoding="utf-8")
    print(f"wrote {args.out / 'ledger.json'}")


def bench_postgres(url: str, entries: int, batch: int) -> dict[str, object]:
    """:func:`bench` in a fresh schema of the server at ``url``, dropped afterwards; skipped when unreachable."""
    try:
        import psycopg

        schema = "ledger_bench_" + uuid.uuid4().hex[:8]
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")  # type: ignore[arg-type]
    except Exception as exc:
        return {"backend": "postgresql", "skipped": str(exc).splitlines()[0]}
    try:
        return bench(f"{url}?options=-csearch_path%3D{schema}", entries, batch)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
