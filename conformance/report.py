"""The reviewer's report: one self-contained HTML file that says, in plain words, what was checked against what.

A report is built from verdicts (a verdicts file, or the ledger's entries of a run or since a time) and the
approved baselines they name, read from the registry for their texts and calibration scores. It opens with a
summary (what was checked, against which approved baselines, by whom approved, alpha, the guarantee, how
many outputs and batches fell out of bounds); then each group's batch verdict in words that match its tests,
with a plot of the audited scores against the approved calibration scores; then each out-of-bounds output with
its input, its output, the nearest approved outputs as text, and the reason; a glossary closes it.

The file has no script and loads nothing: styles are inline, plots are inline SVG, and its
Content-Security-Policy forbids scripts and every outside source, so it opens the same in ten years and an
output's text can never run in it. Every text from a record or a baseline goes through Jinja2's autoescaping.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from conformance._version import __version__
from conformance.errors import ConformanceError, InputFileError
from conformance.files import atomic_write_bytes

#: The report's Content-Security-Policy: nothing runs, nothing is fetched; inline styles and data: images only.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

GLOSSARY = (
    ("Approved outputs", "Outputs of this model version, for this class of input, from evaluation runs that people "
                         "approved. They define what is within bounds."),
    ("Baseline", "What was learned from the approved outputs of one model version and input class, registered "
                 "in MLflow with a version number and approved by a named person."),
    ("Calibration outputs", "Approved outputs held out when the baseline was built. An audited output is compared "
                            "with them to say how unusual it is."),
    ("p-value", "The share of approved calibration outputs at least as unusual as this output (counting the "
                "output itself). Small means unusual."),
    ("alpha", "The false-alarm rate the baseline was approved with: an output like the approved ones is flagged "
              "out of bounds with probability at most alpha."),
    ("Out of bounds", "The p-value is at or below alpha: the output is more unusual than approved outputs almost "
                      "ever are. It is a reason to look, not proof of a fault."),
    ("Within bounds", "The p-value is above alpha: nothing in this output is more unusual than approved outputs "
                      "often are."),
    ("No baseline", "No approved baseline exists for this model version and input class, so the output could not "
                    "be judged."),
    ("Invalid", "The record could not be read as an audited output (for example, its text was missing)."),
    ("Batch verdict", "The outputs of one model version and input class, tested together against approved "
                      "outputs. It can find a change too small to show in any single output."),
    ("Mann-Whitney test", "Do the batch's scores run higher than the approved outputs' scores?"),
    ("Kolmogorov-Smirnov test", "Are the batch's scores distributed differently (higher, lower, narrower, wider)?"),
    ("MMD and energy-distance tests", "Has what the outputs say moved away from what the approved outputs say?"),
    ("Conditional batch test", "How baselines built since 0.6.0 test a batch: each output is reduced to what it says "
                               "and how it is written beyond what its input predicts, and the batch is compared with "
                               "every approved output of the baseline by tests (MMD) of those features: since 0.10.0, "
                               "one of both taken together, one of the words and punctuation the outputs use and one "
                               "of how their lines begin and how they open and close (0.9.0: the first two; "
                               "0.7.0-0.8.0: four tests, 0.6.0: three)."),
    ("Style", "Which words, punctuation marks and pairs of them an output uses, and how often: a model's habits of "
              "writing, which a silent update often changes while what it says stays the same."),
    ("Shape", "How an output's lines begin (a list item, a numbered step, a heading, a paragraph's first word) and "
              "its first and last three words and marks: how a model lays out, opens and closes its answers."),
    ("Fisher combination", "How baselines built since 0.9.0 combine the conditional batch test's p-values: by "
                           "asking how often, over the same reshufflings of whole prompts, the product of the "
                           "p-values is as small as observed. Exact, and two tests that each see a little add up."),
    ("minP combination", "How baselines built by 0.6.0-0.8.0 combine the conditional batch test's p-values: by asking "
                         "how often, over the same reshufflings of whole prompts, the smallest of them is as small "
                         "as observed: exact, and one strong test is not watered down by the others."),
    ("Bonferroni combination", "The batch is out of bounds when one test's p-value, times the number of tests, is "
                               "at or below alpha; so looking at several tests does not raise the false-alarm rate."),
    ("Nearest approved outputs", "The approved outputs most similar to this output: what the model said for "
                                 "comparable inputs."),
    ("Ledger", "The tamper-evident record of every verdict: each entry carries the hash of the one before it."),
)


@dataclass
class BaselineView:
    """One approved baseline version as the report shows it."""

    uri: str
    model_version: str | None
    input_class: str | None
    alpha: float | None
    approved_by: str | None
    approved_at: str | None
    n_calibration: int | None = None  # how many approved outputs (or, weighted by prompt, prompts) a p-value counts
    lineage: dict[str, Any] = field(default_factory=dict)
    available: bool = False
    problem: str | None = None
    texts: dict[str, dict[str, str]] = field(default_factory=dict)  # record_id -> input, output
    calibration_scores: list[float] = field(default_factory=list)


@dataclass
class Report:
    """Everything the HTML shows; :func:`render` turns it into the file."""

    source: str
    generated_at: str
    verdicts: list[dict[str, Any]]
    batches: dict[tuple[str, str, str], dict[str, Any]]  # (run_id or "", model_version, input_class) -> batch
    baselines: dict[str, BaselineView]

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(v.get("verdict") for v in self.verdicts)
        return {k: counts.get(k, 0) for k in ("within_bounds", "out_of_bounds", "no_baseline", "invalid")}


# -- reading -----------------------------------------------------------------------------------------------------
def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_verdicts_file(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a verdicts file written by ``score`` (.jsonl, .csv or .parquet), in order."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such verdicts file")
    suffix = path.suffix.lower()
    rows: list[dict[str, Any]]
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputFileError(f"{path}, line {number}: not JSON ({exc.msg}); is this a verdicts file "
                                         "written by conformance score?") from exc
                if not isinstance(row, dict):
                    raise InputFileError(f"{path}, line {number}: not a JSON object")
                rows.append(row)
    elif suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = (pd.read_csv(path, dtype=str, keep_default_na=False) if suffix == ".csv"
                 else pd.read_parquet(path))
        rows = []
        for raw in frame.to_dict(orient="records"):
            row = {str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in raw.items()}
            for key in ("p_value", "score", "alpha"):
                if isinstance(row.get(key), str):
                    row[key] = float(row[key]) if row[key] else None
            row["nearest"] = _json_or_text(row.get("nearest")) or []
            rows.append(row)
    else:
        raise InputFileError(f"{path}: a verdicts file must end in .jsonl, .csv or .parquet")
    missing = [i for i, r in enumerate(rows, 1) if "verdict" not in r or "record_id" not in r]
    if missing:
        raise InputFileError(f"{path}, row {missing[0]}: no verdict or record_id field; is this a verdicts file "
                             "written by conformance score?")
    return rows


def read_summary(path: str | Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The batch verdicts of a summary file written by ``score --summary``, by ("", model_version, input_class)."""
    try:
        groups = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputFileError(f"{path}: no such summary file") from exc
    except ValueError as exc:
        raise InputFileError(f"{path}: not JSON ({exc}); give the file written by score --summary") from exc
    if isinstance(groups, dict):
        groups = groups.get("groups", [])
    if not isinstance(groups, list):
        raise InputFileError(f"{path}: expected a list of groups, as score --summary writes")
    return {("", str(g.get("model_version")), str(g.get("input_class"))): g for g in groups if isinstance(g, dict)}


def from_ledger(*, run_id: str | None = None, since: str | None = None, ledger: Any = None) -> tuple[
        list[dict[str, Any]], dict[tuple[str, str, str], dict[str, Any]], str]:
    """Verdict rows and batch verdicts of one run, or of every run since a time, from the ledger; a group is one
    (model_version, input_class) of one run, as the batch tests were."""
    from conformance.ledger import Filters, Ledger

    book = ledger if isinstance(ledger, Ledger) else Ledger(ledger, create=False)
    entries = book.query(Filters(run_id=run_id, since=since))
    rows: list[dict[str, Any]] = []
    batches: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in entries:
        content = entry.content
        verdict = content.get("verdict") or {}
        if not isinstance(verdict, dict):
            continue
        row = {**(content.get("record") or {}), **verdict, "seq": entry.seq, "run_id": content.get("run_id")}
        rows.append(row)
        batch = content.get("batch")
        if isinstance(batch, dict):
            batches[(str(content.get("run_id")), str(verdict.get("model_version")),
                     str(verdict.get("input_class")))] = batch
    what = f"run {run_id}" if run_id else f"every run since {since}"
    if not rows:
        raise ConformanceError(f"the ledger {book.url} holds no verdicts of {what}; see conformance verdicts")
    return rows, batches, f"ledger {book.url}, {what}"


def baseline_views(rows: Iterable[Mapping[str, Any]], registry: Any) -> dict[str, BaselineView]:
    from conformance.ledger.entry import parse_baseline_uri

    views: dict[str, BaselineView] = {}
    for row in rows:
        uri = row.get("baseline")
        if not uri or uri in views:
            continue
        view = BaselineView(uri=str(uri), model_version=row.get("model_version"), input_class=row.get("input_class"),
                            alpha=row.get("alpha"), approved_by=row.get("approved_by"),
                            approved_at=row.get("approved_at"))
        name, version = parse_baseline_uri(str(uri))
        if registry is None or name is None or version is None:
            view.problem = "the registry was not consulted"
        else:
            try:
                _, baseline = registry.load_version(name, version)
            except ConformanceError as exc:
                view.problem = str(exc).splitlines()[0]
            else:
                view.available = True
                weighted = baseline.spec.p_value_rule == "prompt_weighted"
                view.n_calibration = baseline.n_calibration_prompts if weighted else baseline.n_calibration
                view.lineage = dict(baseline.lineage or {})
                view.texts = {str(r.get("record_id")): {"input": str(r.get("input", "")),
                                                         "output": str(r.get("output", ""))}
                              for r in baseline.reference_records}
                scores = baseline.calibration_scores_by_record
                if scores is None:
                    scores = baseline.calibration_scores
                view.calibration_scores = [float(s) for s in scores]
        views[str(uri)] = view
    return views


def build_report(rows: list[dict[str, Any]], batches: dict[tuple[str, str, str], dict[str, Any]], *, source: str,
                 registry: Any = None) -> Report:
    """A :class:`Report` of verdict rows and their groups' batch verdicts; baselines from ``registry``."""
    return Report(source=source, generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  verdicts=rows, batches=batches, baselines=baseline_views(rows, registry))


# -- words -------------------------------------------------------------------------------------------------------
def compared_phrase(row: Mapping[str, Any], view: BaselineView | None) -> str | None:
    """"more unusual than X of the N approved outputs it was compared with", from the p-value's own definition
    (split conformal: p = (1 + number at least as unusual) / (N + 1))."""
    p, alpha = row.get("p_value"), row.get("alpha")
    if p is None or view is None or not view.n_calibration:
        return None
    n = int(view.n_calibration)
    at_least = max(0, min(n, round(float(p) * (n + 1) - 1)))
    more = n - at_least
    said = f"more unusual than {more} of the {n} approved outputs it was compared with"
    if alpha is not None:
        said += f" (p-value {float(p):.4g}; flagged at or below alpha {float(alpha):g})"
    return said


def batch_words(batch: Mapping[str, Any], shift: str | None = None) -> str:
    """The batch verdict as one sentence that matches its tests (which rejected, and in which direction), from
    the tests' p-values; ``shift`` is how the batch's scores differ from the calibration scores."""
    from conformance.scoring.reasons import batch_conclusion, conditional_conclusion

    tests: Mapping[str, Any] = batch["tests"] if isinstance(batch.get("tests"), dict) else {}
    p_values = tests.get("p_values")
    alpha = batch.get("alpha")
    if (tests.get("test") == "conditional" and isinstance(p_values, dict) and alpha is not None
            and batch.get("p_value") is not None):
        moved = tests.get("descriptor_shifts")
        shifts: Mapping[str, Any] = moved if isinstance(moved, dict) else {}
        sentence = conditional_conclusion(float(batch["p_value"]), {str(k): float(v) for k, v in p_values.items()},
                                          {str(k): float(v) for k, v in shifts.items()}, float(alpha))
        return sentence[0].upper() + sentence[1:]
    if isinstance(p_values, dict) and p_values and alpha is not None:
        sentence = batch_conclusion({str(k): float(v) for k, v in p_values.items()}, float(alpha), shift=shift)
        return sentence[0].upper() + sentence[1:]
    verdict = batch.get("verdict")
    if verdict == "out_of_bounds":
        return "As a batch, they differ from approved outputs."
    if verdict == "within_bounds":
        return "As a batch, no test finds a difference from approved outputs."
    return "No batch test was run for this group."


def guarantee(alpha: float | None) -> str:
    if alpha is None:
        return ""
    return (f"An output like the approved ones, for an input like the approved ones, is flagged out of bounds "
            f"with probability at most {100 * alpha:g}%.")


def facets_of(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """What stands out most in a group's out-of-bounds outputs: each facet in plain words and how many of them it
    was, from their reasons (each reason names its output's most unusual facet in these words)."""
    from conformance.scoring.reasons import FACET_WORDS

    found: Counter[str] = Counter()
    for row in rows:
        if row.get("verdict") != "out_of_bounds":
            continue
        reason = str(row.get("reason") or "")
        said = reason.split("What stands out most is ", 1)
        if len(said) == 2:
            found.update(words for words in FACET_WORDS.values() if said[1].startswith(words))
    return found.most_common()


# -- the plot ----------------------------------------------------------------------------------------------------
def strip_plot(calibration: list[float], audited: list[tuple[float, bool]], *, width: int = 640) -> str:
    """An SVG strip plot: the approved calibration scores on one line, the audited scores below (flagged ones
    filled red), on a common axis. Only numbers go into it."""
    values = [v for v in calibration if math.isfinite(v)] + [v for v, _ in audited if math.isfinite(v)]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    left, right = 150, width - 20

    def x(value: float) -> float:
        return left + (value - low) / span * (right - left)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="110" role="img" '
             f'aria-label="audited scores against approved calibration scores">',
             f'<line x1="{left}" y1="90" x2="{right}" y2="90" stroke="#888"/>',
             f'<text x="{left}" y="106" font-size="11">{low:.2f}</text>',
             f'<text x="{right}" y="106" font-size="11" text-anchor="end">{high:.2f}</text>',
             f'<text x="{(left + right) / 2:.1f}" y="106" font-size="11" text-anchor="middle">score (higher is more '
             'unusual)</text>',
             '<text x="4" y="30" font-size="12">approved (calibration)</text>',
             '<text x="4" y="70" font-size="12">audited</text>']
    for value in calibration:
        if math.isfinite(value):
            parts.append(f'<circle cx="{x(value):.1f}" cy="26" r="3.5" fill="#4a7ab5" fill-opacity="0.55"/>')
    for value, flagged in audited:
        if math.isfinite(value):
            style = 'fill="#c0392b"' if flagged else 'fill="none" stroke="#333"'
            parts.append(f'<circle cx="{x(value):.1f}" cy="66" r="4" {style}/>')
    parts.append("</svg>")
    return "".join(parts)


# -- rendering ---------------------------------------------------------------------------------------------------
def environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("conformance", "templates"),
                              autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(report: Report) -> str:
    """The report as one HTML document (UTF-8 text)."""
    import markupsafe
    import numpy as np

    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in report.verdicts:  # a group is one cell of one run (a verdicts file is one run)
        groups[(str(row.get("run_id") or ""), str(row.get("model_version")), str(row.get("input_class")))].append(row)
    several_runs = len({key[0] for key in groups}) > 1
    group_views = []
    for key, rows in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] == "None", item[0])):
        batch = report.batches.get(key)
        baseline = next((report.baselines.get(str(r.get("baseline"))) for r in rows if r.get("baseline")), None)
        audited = [(float(r["score"]), r.get("verdict") == "out_of_bounds") for r in rows
                   if isinstance(r.get("score"), (int, float))]
        plot = (strip_plot(baseline.calibration_scores, audited)
                if baseline is not None and baseline.calibration_scores and audited else "")
        counts = Counter(r.get("verdict") for r in rows)
        shift = None
        if baseline is not None and baseline.calibration_scores and audited:
            from conformance.scoring.reasons import score_shift

            shift = score_shift(np.asarray([v for v, _ in audited]), np.asarray(baseline.calibration_scores))
        group_views.append({
            "run": key[0] if several_runs else "",
            "model_version": "not given" if key[1] == "None" else key[1],
            "input_class": "not given" if key[2] == "None" else key[2], "n": len(rows), "counts": counts,
            "batch": batch, "batch_words": batch_words(batch, shift) if batch else None, "facets": facets_of(rows),
            "tests": (batch or {}).get("tests", {}).get("p_values", {}) if batch else {},
            "baseline": baseline, "plot": markupsafe.Markup(plot),  # numbers only: built above
        })
    flagged = []
    for row in report.verdicts:
        if row.get("verdict") != "out_of_bounds":
            continue
        view = report.baselines.get(str(row.get("baseline")))
        nearest = []
        for record_id in row.get("nearest") or []:
            text = view.texts.get(str(record_id)) if view is not None else None
            nearest.append({"record_id": record_id, "input": (text or {}).get("input"),
                            "output": (text or {}).get("output")})
        flagged.append({"row": row, "nearest": nearest, "compared": compared_phrase(row, view)})
    tested = [b for b in report.batches.values() if b.get("verdict") in ("within_bounds", "out_of_bounds")]
    batches_out = sum(1 for b in tested if b.get("verdict") == "out_of_bounds")
    alphas = sorted({b.alpha for b in report.baselines.values() if b.alpha is not None})
    return str(environment().get_template("report.html.j2").render(
        report=report, counts=report.counts, groups=group_views, flagged=flagged, batches_out=batches_out,
        n_batches=len(tested), baselines=list(report.baselines.values()), csp=CSP, glossary=GLOSSARY,
        version=__version__,
        guarantee=guarantee(alphas[0]) if len(alphas) == 1 else "; ".join(guarantee(a) for a in alphas)))


def write_report(report: Report, out: str | Path) -> Path:
    """Render ``report`` and write it to ``out`` atomically (readable as the user's umask allows)."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputFileError(f"{out}: the report is an HTML file; give a name ending in .html")
    if out.exists() and out.is_dir():
        raise InputFileError(f"{out} is a folder; give a file name ending in .html")
    if not out.parent.is_dir():
        raise InputFileError(f"{out.parent}: no such folder for the report")
    atomic_write_bytes(out, render(report).encode("utf-8"))
    return out


def chromium() -> str | None:
    """A headless-capable Chromium on this machine, if any."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def print_pdf(html: str | Path, pdf: str | Path, *, timeout: float = 120.0) -> Path:
    """Print the report to PDF with headless Chromium (no network: the report loads nothing)."""
    browser = chromium()
    if browser is None:
        raise ConformanceError("--pdf needs Chromium (on Debian: apt install chromium); the HTML report was written")
    pdf = Path(pdf)
    with tempfile.TemporaryDirectory() as profile:
        tmp = pdf.with_name(f".{pdf.name}.tmp")
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                               "--no-pdf-header-footer", f"--print-to-pdf={tmp}", Path(html).resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not tmp.is_file():
            tmp.unlink(missing_ok=True)
            raise ConformanceError(f"Chromium could not print {html} to PDF (exit {done.returncode}): "
                                   f"{(done.stderr or '').strip().splitlines()[-1:] or ''}")
        tmp.replace(pdf)
    return pdf
