"""A scoring-run stand-in for the crash and concurrency tests: appends batches in a loop.

    python tests/ledger_writer.py URL PREFIX N_BATCHES BATCH_SIZE [GO_FILE]

Batch ``b`` holds records ``PREFIX-b-0 .. PREFIX-b-(BATCH_SIZE-1)``, always the
same, so a run killed and started again must leave each exactly once. With
GO_FILE, the writer opens the ledger, prints ``ready`` and waits for that file
to exist before its first append, so that several writers start appending at
the same moment however long each took to start.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The tests start this script a dozen times; importing the package's __init__
# (MLflow, scipy) would cost ~2 s each. The ledger needs none of it, so the
# package is registered without running its __init__; the append code is the same.
_spec = importlib.util.find_spec("conformance")
assert _spec is not None and _spec.submodule_search_locations is not None
_package = types.ModuleType("conformance")
_package.__path__ = list(_spec.submodule_search_locations)
sys.modules["conformance"] = _package

from ledger_support import make_verdict  # noqa: E402

from conformance.ledger import Ledger  # noqa: E402


def main(url: str, prefix: str, n_batches: int, batch_size: int, go_file: str | None = None) -> None:
    with Ledger(url) as ledger:
        if go_file is not None:
            print("ready", flush=True)
            deadline = time.monotonic() + 60
            while not Path(go_file).exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"{go_file} did not appear within 60 s")
                time.sleep(0.005)
        for b in range(n_batches):
            ledger.append([make_verdict(f"{prefix}-{b}-{j}", output=f"output {b} {j} " * 20)
                           for j in range(batch_size)], run_id=f"{prefix}-{b}")
            print(b, flush=True)
            if go_file is not None:
                # A scoring run embeds between appends. Without such a pause, SQLite's busy
                # handler (which backs off while the lock holder re-takes it at once) lets
                # one writer append all its batches before the others get a turn.
                time.sleep(0.03)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
