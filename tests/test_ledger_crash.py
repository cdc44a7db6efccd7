"""Never lose, never duplicate: writers really killed with SIGKILL, and really concurrent.

Each test runs ``tests/ledger_writer.py`` in subprocesses against a SQLite file
and a PostgreSQL schema, then verifies the chain and that every record is in
the ledger exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conformance.ledger import Ledger, verify

pytestmark = pytest.mark.slow


WRITER = Path(__file__).with_name("ledger_writer.py")


def _writer(url: str, prefix: str, n_batches: int, batch_size: int, go: Path | None = None) -> subprocess.Popen[str]:
    extra = [] if go is None else [str(go)]
    return subprocess.Popen([sys.executable, str(WRITER), url, prefix, str(n_batches), str(batch_size), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_exactly_once(url: str, expected: set[str]) -> None:
    with Ledger(url, create=False) as ledger:
        report = verify(ledger)
        assert report.ok, report.problem
        counts = Counter(e.content["verdict"]["record_id"] for e in ledger.query())
    duplicated = {k: v for k, v in counts.items() if v > 1}
    assert not duplicated, f"recorded more than once: {sorted(duplicated)[:5]}"
    assert set(counts) == expected, f"lost: {sorted(expected - set(counts))[:5]}"
    assert report.count == len(expected)


def test_kill_9_at_random_moments_then_rerun_leaves_each_verdict_once(ledger_url: str) -> None:
    n_batches, batch_size = 30, 100
    rng = random.Random(20260616)
    Ledger(ledger_url).close()  # create the tables, so the kills land in appends
    kills = 0
    for attempt in range(3):
        proc = _writer(ledger_url, "k", n_batches, batch_size)
        assert proc.stdout is not None
        # Kill at a random moment measured in the writer's progress, not in wall time, so
        # that a fast machine cannot finish the run first: after batch `after` is reported,
        # plus a random fraction of the next append.
        after = rng.randint(1 + 5 * attempt, 5 + 5 * attempt)
        for _line in range(after):
            proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.02))
        os.kill(proc.pid, signal.SIGKILL)
        code = proc.wait(timeout=60)
        kills += code == -signal.SIGKILL
        with Ledger(ledger_url, create=False) as ledger:  # intact after every kill
            assert verify(ledger).ok
    assert kills >= 2, "the writer finished before it could be killed; make its run longer"
    with Ledger(ledger_url, create=False) as ledger:
        partial = ledger.head().seq
    assert 0 < partial < n_batches * batch_size
    proc = _writer(ledger_url, "k", n_batches, batch_size)  # the run again, to completion
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _assert_exactly_once(ledger_url, {f"k-{b}-{j}" for b in range(n_batches) for j in range(batch_size)})


def test_concurrent_writers_keep_the_chain_valid_and_each_verdict_once(ledger_url: str, tmp_path: Path) -> None:
    """Three processes start on a ledger that does not exist yet: two distinct runs, and a
    copy of one of them, so the same records race each other. Once all three have opened
    the ledger they are released together, so that their appends really overlap."""
    n_batches, batch_size = 25, 40
    go = tmp_path / "go"
    procs = [_writer(ledger_url, p, n_batches, batch_size, go) for p in ("a", "b", "b")]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    expected = {f"{p}-{b}-{j}" for p in "ab" for b in range(n_batches) for j in range(batch_size)}
    _assert_exactly_once(ledger_url, expected)
    with Ledger(ledger_url, create=False) as ledger:
        runs = [e.content["run_id"][0] for e in ledger.query()]
    # the writers really interleaved: the chain switches between them more than once
    switches = sum(1 for x, y in zip(runs, runs[1:]) if x != y)
    assert switches >= 2, f"the writers did not overlap ({switches} switches)"
