"""The reviewer's report: self-contained, every model text inert, batch words that match the tests."""

from __future__ import annotations

import contextlib
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conformance import report
from conformance.cli import main
from conformance.scoring.reasons import batch_conclusion, score_shift

#: Outputs a hostile or careless model could produce; each must show as text and nothing else.
PAYLOADS = [
    "<script>alert('xss')</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    "</textarea><script>alert(2)</script>",
    "</div></div><svg onload=alert(3)>",
    '"><iframe src="https://evil.example/"></iframe>',
    "{{ 7*7 }} {% raw %} ${7*7}",
]


class _Elements(HTMLParser):
    """Every element and attribute of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend((tag, name, value) for name, value in attrs)


def _rows() -> list[dict]:
    rows = []
    for i, payload in enumerate(PAYLOADS):
        flagged = i % 2 == 0
        rows.append({"row": i + 1, "record_id": f"r{i}-{payload}", "model_version": "m<b>1</b>", "input_class": "c",
                     "verdict": "out_of_bounds" if flagged else "within_bounds", "p_value": 0.03 if flagged else 0.5,
                     "score": 3.0 + i, "alpha": 0.05, "baseline": "models:/conformance.m.c/1", "approved_by": payload,
                     "approved_at": "2026-12-01T00:00:00+00:00", "nearest": [payload], "reason": payload,
                     "input": f"input {payload}", "output": f"output {payload}", "scored_at": "2026-12-02T00:00:00Z"})
    rows.append({"row": 99, "record_id": "bad", "model_version": None, "input_class": "c", "verdict": "invalid",
                 "reason": "The record could not be judged: no output.", "nearest": []})
    return rows


def _batch(p_values: dict[str, float], verdict: str) -> dict:
    return {"model_version": "m<b>1</b>", "input_class": "c", "verdict": verdict, "alpha": 0.05,
            "p_value": min(1.0, len(p_values) * min(p_values.values())), "tests": {"p_values": p_values}}


def test_model_text_is_inert_and_the_file_loads_nothing(tmp_path: Path) -> None:
    built = report.build_report(_rows(), {("", "m<b>1</b>", "c"): _batch(
        {"mann_whitney": 0.001, "kolmogorov_smirnov": 0.5, "mmd": 0.5, "energy": 0.5}, "out_of_bounds")},
        source="test <script>", registry=None)
    out = report.write_report(built, tmp_path / "report.html")
    text = out.read_text(encoding="utf-8")
    parsed = _Elements()
    parsed.feed(text)
    assert "script" not in parsed.tags and "img" not in parsed.tags and "iframe" not in parsed.tags
    assert "textarea" not in parsed.tags and "a" not in parsed.tags and "b" not in parsed.tags
    assert "svg" not in parsed.tags  # no plot without the baselines' calibration scores
    assert not [a for a in parsed.attributes if a[1].startswith("on")]
    assert not [a for a in parsed.attributes if a[1] in ("src", "href")], "the report must load nothing"
    csp = [v for tag, name, v in parsed.attributes if tag == "meta" and name == "content" and v and "default-src" in v]
    assert csp == [report.CSP] and "default-src 'none'" in report.CSP and "script-src" not in report.CSP
    import markupsafe

    for payload in PAYLOADS[::2]:  # each flagged output shows, as text
        assert str(markupsafe.escape(f"output {payload}")) in text
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in text
    assert "output {{ 7*7 }} {% raw %} ${7*7}" in text  # model text is never evaluated as a template
    assert "4 fell out of bounds" in text and "Model version not given" in text


def test_the_facets_of_a_group_come_from_its_flagged_reasons() -> None:
    from conformance.scoring.reasons import FACET_WORDS

    rows = [{"verdict": "out_of_bounds", "reason": f"... What stands out most is {FACET_WORDS['language']}: a "
                                                   "standardised value of 4.1, where ..."},
            {"verdict": "out_of_bounds", "reason": f"... What stands out most is {FACET_WORDS['language']}: ..."},
            {"verdict": "out_of_bounds", "reason": f"... What stands out most is {FACET_WORDS['length']}: ..."},
            {"verdict": "within_bounds", "reason": f"... What stands out most is {FACET_WORDS['format']}: ..."},
            {"verdict": "out_of_bounds", "reason": "a reason without facets"}]
    assert report.facets_of(rows) == [(FACET_WORDS["language"], 2), (FACET_WORDS["length"], 1)]


def test_the_batch_words_match_the_tests_that_rejected() -> None:
    # The case that used to read "more unusual": nothing flagged, Mann-Whitney p = 1, the rest p = 0.001.
    words = batch_conclusion({"mann_whitney": 1.0, "kolmogorov_smirnov": 0.001, "mmd": 0.001, "energy": 0.001},
                             0.05, shift="less_varied")
    assert "more unusual" not in words and "less varied" in words and "Kolmogorov-Smirnov" in words
    assert "MMD and energy-distance tests" in words
    assert "Mann-Whitney" in batch_conclusion({"mann_whitney": 0.001, "kolmogorov_smirnov": 0.5, "mmd": 0.5,
                                               "energy": 0.5}, 0.05)
    # 0.02 x 4 tests > 0.05: no test rejects, and the sentence says why the smallest does not count
    within = batch_conclusion({"mann_whitney": 0.02, "kolmogorov_smirnov": 0.5, "mmd": 0.5, "energy": 0.5}, 0.05)
    assert within.startswith("as a batch, no test finds a difference") and "4 tests are combined" in within
    import numpy as np

    rng = np.random.default_rng(0)
    calibration = rng.normal(0, 1, 200)
    assert score_shift(rng.normal(0, 0.2, 100), calibration) == "less_varied"
    assert score_shift(rng.normal(0, 4, 100), calibration) == "more_varied"
    assert score_shift(rng.normal(2, 1, 100), calibration) == "higher"
    assert score_shift(rng.normal(-2, 1, 100), calibration) == "lower"
    assert score_shift(np.array([1.0]), calibration) is None


def test_the_p_value_in_words() -> None:
    view = report.BaselineView(uri="u", model_version="m", input_class="c", alpha=0.05, approved_by="A",
                               approved_at="t", n_calibration=29)
    assert report.compared_phrase({"p_value": 1 / 30, "alpha": 0.05}, view).startswith(
        "more unusual than 29 of the 29 approved outputs")
    assert report.compared_phrase({"p_value": 4 / 30, "alpha": 0.05}, view).startswith("more unusual than 26 of")
    assert report.compared_phrase({"p_value": None}, view) is None


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_report_command_errors_are_clear(tmp_path: Path) -> None:
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text("".join(json.dumps(r) + "\n" for r in _rows()), encoding="utf-8")
    code, out, err = _cli("report", str(verdicts), "--out", str(tmp_path / "r.html"), "--no-registry")
    assert code == 0 and "report of 8 verdicts (4 out of bounds)" in out, err
    assert (tmp_path / "r.html").stat().st_size > 1000
    code, _, err = _cli("report", str(verdicts), "--out", str(tmp_path / "r.txt"), "--no-registry")
    assert code == 2 and "ending in .html" in err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"record_id": "a", "verdict": "within_bounds"}\nnot json\n', encoding="utf-8")
    code, _, err = _cli("report", str(broken), "--out", str(tmp_path / "b.html"), "--no-registry")
    assert code == 2 and "line 2: not JSON" in err and "Traceback" not in err
    assert not (tmp_path / "b.html").exists()
    code, _, err = _cli("report", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "m.html"))
    assert code == 2 and "no such verdicts file" in err
    code, _, err = _cli("report", "--run", "x", "--summary", "s.json", "--out", str(tmp_path / "s.html"))
    assert code == 2 and "--summary goes with a VERDICTS_FILE" in err
    code, _, err = _cli("report", "--out", str(tmp_path / "n.html"))
    assert code == 2  # no source: argparse says which are needed
    from conformance.ledger import Ledger

    Ledger(f"sqlite:///{tmp_path / 'empty.db'}").close()  # a real, empty ledger
    code, _, err = _cli("report", "--run", "nope", "--out", str(tmp_path / "n.html"),
                        "--ledger", f"sqlite:///{tmp_path / 'empty.db'}")
    assert code == 2 and "holds no verdicts of run nope" in err


@pytest.mark.slow
def test_report_of_a_real_run_shows_baselines_texts_and_plots(built: list[dict], audited_subset: Path,
                                                              workdir: Path, tmp_path: Path) -> None:
    verdicts, summary = tmp_path / "verdicts.jsonl", tmp_path / "summary.json"
    # ids of their own, so that this run's entries are new whatever else the session's ledger holds
    audited = tmp_path / "audited.jsonl"
    audited.write_text("".join(json.dumps({**row, "record_id": f"report-{row.get('record_id')}"}) + "\n"
                               for row in map(json.loads, audited_subset.read_text(encoding="utf-8").splitlines())),
                       encoding="utf-8")
    code, out, err = _cli("score", str(audited), "--out", str(verdicts), "--summary", str(summary),
                          "--no-progress", "--format", "json")
    assert code in (0, 1), err
    run_id = json.loads(out)["ledger"]["run_id"]
    rows = [json.loads(line) for line in verdicts.read_text(encoding="utf-8").splitlines()]
    flagged = [r for r in rows if r["verdict"] == "out_of_bounds"]
    assert flagged
    for argv in ((str(verdicts), "--summary", str(summary)), ("--run", run_id)):
        html = tmp_path / f"report-{len(argv)}.html"
        code, out, err = _cli("report", *argv, "--out", str(html))
        assert code == 0, err
        text = html.read_text(encoding="utf-8")
        parsed = _Elements()
        parsed.feed(text)
        assert parsed.tags.count("svg") == len(built)  # one plot per approved cell
        assert "Test Approver" in text and f"{len(flagged)} fell out of bounds" in text
        for b in built:
            assert f"models:/{b['name']}/{b['version']}" in text
        # the nearest approved outputs as text: the first flagged output's nearest one, from the baseline
        from conformance.registry import Registry

        name, version = flagged[0]["baseline"].removeprefix("models:/").rsplit("/", 1)
        _, baseline = Registry().load_version(name, int(version))
        texts = {r["record_id"]: r["output"] for r in baseline.reference_records}
        nearest = texts[flagged[0]["nearest"][0]]
        import markupsafe

        assert str(markupsafe.escape(nearest.splitlines()[0])) in text  # as text, escaped as the page escapes it
        assert "more unusual than" in text and "Glossary" in text
        assert "What stands out most in its out-of-bounds outputs:" in text


def test_a_report_since_a_time_keeps_each_runs_batch_verdict(tmp_path: Path) -> None:
    """A group is one cell of one run: two runs of one cell are two groups, each with its own batch verdict."""
    from conformance.ledger import Ledger
    from conformance.verdict import GroupSummary
    from tests.ledger_support import make_verdict

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger(url) as book:
        for run, (p, verdict) in (("run-a", (0.001, "out_of_bounds")), ("run-b", (0.5, "within_bounds"))):
            summary = GroupSummary("bot-1", "refund", 2, {"within_bounds": 2}, min(1.0, 4 * p), verdict, "t",
                                   "models:/conformance.bot-1.refund/1", 0.05, "r",
                                   tests={"p_values": {"mann_whitney": p, "kolmogorov_smirnov": 0.9, "mmd": 0.9,
                                                       "energy": 0.9}})
            book.append([make_verdict(f"{run}-{i}") for i in range(2)], run_id=run, summaries=[summary])
    code, out, err = _cli("report", "--since", "2026-01-01", "--out", str(tmp_path / "r.html"), "--ledger", url,
                          "--no-registry")
    assert code == 0, err
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "input class refund, run run-a" in text and "input class refund, run run-b" in text
    assert "Of the 2 groups tested as a batch, <span class=\"out\">1 fell out of bounds" in text
    assert text.count("They are more unusual: their scores run higher") == 1
