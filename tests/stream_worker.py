"""A streamed scoring run for the resume tests, killed with SIGKILL and started again.

    python tests/stream_worker.py WORKDIR [--slow-embed S] [--slow-append S]

In WORKDIR: ``baseline/`` (a saved baseline), ``audited.jsonl``; the run writes ``verdicts.jsonl``,
``summary.json``, the ledger ``ledger.db`` and the embedding cache under ``conformance_store/`` (the
working directory is WORKDIR). Every text the fake embedder embeds is appended to ``embedded.log``
(flushed at once); every ledger transaction prints ``appended N``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import conformance  # noqa: E402
from conformance.baseline.format import Baseline  # noqa: E402
from conformance.ledger import Ledger  # noqa: E402
from tests.test_stat_fdr import FakeEmbedder  # noqa: E402


class LoggingEmbedder(FakeEmbedder):
    def __init__(self, log: Path, pause: float) -> None:
        self.log, self.pause = log, pause

    def embed(self, texts, **kw):  # type: ignore[no-untyped-def]
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write("".join(t + "\n" for t in texts))
            handle.flush()
            os.fsync(handle.fileno())
        time.sleep(self.pause)
        return super().embed(texts, **kw)


class SlowLedger(Ledger):
    pause = 0.0

    def append(self, verdicts, **kw):  # type: ignore[no-untyped-def, override]
        report = super().append(verdicts, **kw)
        print(f"appended {report.added}", flush=True)
        time.sleep(self.pause)
        return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--slow-embed", type=float, default=0.0)
    parser.add_argument("--slow-append", type=float, default=0.0)
    args = parser.parse_args()
    os.chdir(args.workdir)
    SlowLedger.pause = args.slow_append
    baseline = Baseline.load("baseline")
    with SlowLedger(f"sqlite:///{args.workdir / 'ledger.db'}") as book:
        result = conformance.score("audited.jsonl", baselines=[baseline], ledger=book, out="verdicts.jsonl",
                                   summary="summary.json", cache=True, chunk_size=10, keep_verdicts=False,
                                   progress=False, embedder=LoggingEmbedder(args.workdir / "embedded.log",
                                                                            args.slow_embed))
    print("done", result.counts, flush=True)


if __name__ == "__main__":
    main()
