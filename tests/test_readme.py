"""The README's examples run as written: its Python API example, and its two commands are CI's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import E2E_CELLS, EXAMPLE, REPO, read_jsonl, write_jsonl

README = (REPO / "README.md").read_text(encoding="utf-8")


def _block(language: str, containing: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"the README has {len(found)} {language} blocks with {containing!r}"
    return found[0]


def test_the_readme_commands_are_the_ones_ci_runs() -> None:
    commands = _block("bash", "pip install")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    setup = next(line for line in commands.splitlines() if line.startswith("python3 -m venv"))
    for part in setup.split(" && "):
        assert part.strip() in ci, f"CI does not run the README's {part!r}"
    assert ".venv/bin/python -m pytest\n" in commands and ".venv/bin/python -m pytest" in ci


@pytest.mark.slow
def test_the_readme_python_example_runs_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder) -> None:
    # The example's in-memory half, as written, on two of the example's cells (the registry half is
    # what the pipeline tests run through the command line).
    code = _block("python", "register=False")
    in_memory = code.split("# The registry door")[0]
    folder = tmp_path / "baselines" / "example"
    folder.mkdir(parents=True)
    for name in ("approved.jsonl", "audited.jsonl"):
        rows = [r for r in read_jsonl(EXAMPLE / name) if (r.get("model_version"), r.get("input_class")) in E2E_CELLS]
        write_jsonl(rows, folder / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the in-memory half must not need it
    # `embedder` is the process-wide instance the example's calls use: loaded once per session.
    namespace: dict = {}
    exec(compile(in_memory, "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    result, frame = namespace["result"], namespace["frame"]
    assert len(frame) == len(read_jsonl(folder / "audited.jsonl"))
    assert result.counts["out_of_bounds"] > 0 and sum(result.counts.values()) == len(frame)
    assert (tmp_path / "my_baseline" / "baseline.json").is_file()
    assert namespace["again"].digest == namespace["baselines"][0].baseline.digest
    assert not (tmp_path / "conformance_store").exists()
