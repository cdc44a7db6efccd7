"""The one place the benchmarks find their data: real model outputs kept outside the repository.

The files are not part of the project (their licences do not allow copying them in). They are
looked for in ``../shared/data`` beside the repository, or in the folder named by the environment
variable ``CONFORMANCE_BENCH_DATA``. When a file is missing, :func:`require` stops the benchmark
with a message saying which file, where it was looked for and how to get it; no traceback.

    python -m benchmarks.data          # says where the data is looked for and what is there
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from collections.abc import Iterable
from pathlib import Path

ENV = "CONFORMANCE_BENCH_DATA"
REPOSITORY = Path(__file__).resolve().parents[1]

MT_BENCH = "mt_bench_answers.jsonl.gz"
ARENA = "arena_answers.jsonl.gz"

#: What each file holds and where it comes from (the shared folder's README says more).
SOURCES = {
    MT_BENCH: (
        "5,120 rows {model, prompt_id, input_class, input, output}: the MT-bench answers of 32 chat models "
        "(both turns of the 80 questions; prompt_id 'mt_bench:<question>:turn1|turn2', input_class the MT-bench "
        "category). Made from github.com/ku-nlp/ja-vicuna-qa-benchmark at commit "
        "44bd00f58a18232e7360bb2f64a22aee2377c031: fastchat/llm_judge/data/mt_bench/question.jsonl and "
        "model_answer/<model>.jsonl, one JSON object a line, gzip-compressed."
    ),
    ARENA: (
        "8,071 rows {source, model, prompt_id, input_class, input, output}: single-turn answers of "
        "arena-bench-v1, arena-hard-v0.1 and arena-hard-v2.0. Made from github.com/lmarena/arena-hard-auto: "
        "data/<source>/question.jsonl and data/<source>/model_answer/<model>.jsonl, one JSON object a line, "
        "gzip-compressed."
    ),
}


def data_dir() -> Path:
    """The folder the data is read from: ``$CONFORMANCE_BENCH_DATA``, else ``../shared/data``."""
    override = os.environ.get(ENV)
    if override:
        return Path(override).expanduser()
    return REPOSITORY.parent / "shared" / "data"


def require(name: str) -> Path:
    """The path of data file ``name``; stops the benchmark with a how-to-get-it message when it is absent."""
    folder = data_dir()
    path = folder / name
    if path.is_file():
        return path
    where = f"${ENV} = {folder}" if os.environ.get(ENV) else f"{folder} (../shared/data beside the repository)"
    raise SystemExit(
        f"benchmark data missing: {name} is not in {where}.\n"
        f"What it is: {SOURCES.get(name, 'see the shared data README')}\n"
        f"To run this benchmark, put the file in that folder, or point {ENV} at a folder that holds it."
    )


def _read_jsonl_gz(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def mt_bench_rows() -> list[dict[str, str]]:
    """The MT-bench answers: ``{model, prompt_id, input_class, input, output}`` per row."""
    return _read_jsonl_gz(require(MT_BENCH))


def arena_rows(sources: Iterable[str] | None = None) -> list[dict[str, str]]:
    """The arena answers, optionally only those of the given ``source`` values (e.g. ``arena-hard-v2.0``)."""
    rows = _read_jsonl_gz(require(ARENA))
    if sources is None:
        return rows
    wanted = set(sources)
    return [r for r in rows if r["source"] in wanted]


def question(prompt_id: str) -> str:
    """The MT-bench question number of a prompt id ``mt_bench:<question>:turn<n>``: both turns share it."""
    return prompt_id.split(":")[1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    folder = data_dir()
    print(f"data folder: {folder}" + (f" (from ${ENV})" if os.environ.get(ENV) else ""))
    for name in SOURCES:
        path = folder / name
        print(f"  {name}: " + (f"present, {path.stat().st_size:,} bytes" if path.is_file() else "MISSING"))


if __name__ == "__main__":
    main()
