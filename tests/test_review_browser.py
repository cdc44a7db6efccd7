"""The review page in a real browser (Debian's chromium and chromium-driver through Selenium), served by a real
``conformance review`` process over a real ledger and registry: it loads, a filter narrows the list, a sign-off
posted from the form lands in the ledger (which still verifies), and planted XSS payloads stay inert text.

Screenshots of the summary, a verdict page and the report go to the test's output folder (printed; kept when
CONFORMANCE_SCREENSHOTS names a folder)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import read_jsonl, write_jsonl

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
#: Each would run script, load something or break out of its element if it were not escaped.
PAYLOADS = [
    "<script>document.title='pwned-script'</script>",
    "<img src=x onerror=\"document.title='pwned-img'\">",
    "<a id=jslink href=\"javascript:document.title='pwned-link'\">click me</a>",
    "</textarea></div><script>alert('pwned')</script>",
    "<svg onload=alert(1)><iframe src=\"https://example.invalid/\"></iframe>",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from conformance.cli import main; sys.exit(main())",
                           *argv], cwd=cwd, capture_output=True, text=True, timeout=600)


def _serve(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from conformance.cli import main; sys.exit(main())",
                             "review", "--port", str(port), *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("conformance review did not start listening")


@pytest.fixture(scope="module")
def scored(built: list[dict], audited_subset: Path, workdir: Path) -> dict:
    """The audited subset plus one record per payload (in the built cells), scored into the ledger."""
    rows = read_jsonl(audited_subset)
    template = next(r for r in rows if (r.get("model_version"), r.get("input_class")) ==
                    (built[0]["model_version"], built[0]["input_class"]))
    planted = [{**template, "record_id": f"xss-{i}", "prompt_id": f"xss-prompt-{i}",
                "output": f"Thanks for writing. {payload} Your parcel is on its way."} for i, payload in
               enumerate(PAYLOADS)]
    audited = write_jsonl(rows + planted, workdir / "audited-xss.jsonl")
    done = _cli("score", str(audited), "--out", str(workdir / "verdicts-xss.jsonl"), "--summary",
                str(workdir / "summary-xss.json"), "--no-progress", "--format", "json", cwd=workdir)
    assert done.returncode in (0, 1), done.stderr
    return {"run_id": json.loads(done.stdout)["ledger"]["run_id"], "n": len(rows) + len(planted),
            "verdicts": workdir / "verdicts-xss.jsonl", "summary": workdir / "summary-xss.json"}


@pytest.fixture(scope="module")
def server(scored: dict, workdir: Path) -> Iterator[str]:
    proc, port = _serve(workdir)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None or DRIVER is None:
        why = "the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
        if os.environ.get("CONFORMANCE_REQUIRE_BROWSER"):
            pytest.fail(why)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    keep = os.environ.get("CONFORMANCE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in folder.iterdir():
            shutil.copy(shot, Path(keep) / shot.name)
    print(f"screenshots: {sorted(str(p) for p in folder.iterdir())}")


def _no_alert(driver: object) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text  # type: ignore[attr-defined]


def test_summary_and_filter(server: str, browser: object, scored: dict, shots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    driver.get(server + "/")  # type: ignore[attr-defined]
    assert driver.title == "Summary · conformance"  # type: ignore[attr-defined]
    assert scored["run_id"] in driver.find_element(By.ID, "runs").text  # type: ignore[attr-defined]
    driver.save_screenshot(str(shots / "review-summary.png"))  # type: ignore[attr-defined]
    driver.get(server + "/verdicts")  # type: ignore[attr-defined]
    every = len(driver.find_elements(By.CSS_SELECTOR, "tr.verdict-row"))  # type: ignore[attr-defined]
    assert every >= scored["n"]
    Select(driver.find_element(By.NAME, "verdict")).select_by_value("out_of_bounds")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "apply").click()  # type: ignore[attr-defined]
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: "verdict=out_of_bounds" in d.current_url)  # the filtered page
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.verdict-row")  # type: ignore[attr-defined]
    assert 0 < len(rows) < every
    assert all("out of bounds" in row.text for row in rows)
    assert "verdict=out_of_bounds" in driver.current_url  # type: ignore[attr-defined]


def test_payloads_stay_text_and_a_signoff_lands_in_the_ledger(server: str, browser: object, scored: dict,
                                                              workdir: Path, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(server + "/verdicts?" + urllib.parse.urlencode({"run": scored["run_id"]}))  # type: ignore[attr-defined]
    links = {a.text: a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "tr.verdict-row a")  # type: ignore[attr-defined]
             if a.text.startswith("xss-")}
    assert sorted(links) == [f"xss-{i}" for i in range(len(PAYLOADS))]
    for i, payload in enumerate(PAYLOADS):
        driver.get(links[f"xss-{i}"])  # type: ignore[attr-defined]
        _no_alert(driver)
        assert "pwned" not in driver.title  # type: ignore[attr-defined]
        output = driver.find_element(By.ID, "output")  # type: ignore[attr-defined]
        assert payload in output.text  # shown as the characters it is
        injected = driver.find_elements(By.CSS_SELECTOR,  # type: ignore[attr-defined]
                                        "main script, main img, main iframe, main svg, #jslink")
        assert injected == []
    # sign off the last one from the form, with a hostile comment
    driver.get(links["xss-0"])  # type: ignore[attr-defined]
    seq = int(links["xss-0"].rstrip("/").rsplit("/", 1)[1])
    driver.find_element(By.CSS_SELECTOR, "input[name=decision][value=false_alarm]").click()  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "by").send_keys("Rita Reviewer")  # type: ignore[attr-defined]
    driver.find_element(By.NAME, "comment").send_keys("Looks fine. <script>alert('c')</script>")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "sign").click()  # type: ignore[attr-defined]
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: "done=signed" in d.current_url)
    assert "Your sign-off was added" in driver.find_element(By.ID, "done").text  # type: ignore[attr-defined]
    listed = driver.find_element(By.ID, "signoffs").text  # type: ignore[attr-defined]
    assert "false alarm by Rita Reviewer" in listed and "<script>alert('c')</script>" in listed
    _no_alert(driver)
    driver.save_screenshot(str(shots / "review-verdict.png"))  # type: ignore[attr-defined]
    verified = _cli("ledger", "verify", cwd=workdir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    listed_json = _cli("verdicts", "--record-id", "xss-0", "--format", "json", cwd=workdir)
    assert listed_json.returncode == 0, listed_json.stderr
    entries = json.loads(listed_json.stdout)
    mine = [e for e in entries if e["seq"] == seq]
    assert mine and [s["by"] for s in mine[0]["signoffs"]] == ["Rita Reviewer"]
    assert mine[0]["verdict"] in ("out_of_bounds", "within_bounds")  # the verdict itself is unchanged


def test_the_report_in_the_browser(scored: dict, browser: object, workdir: Path, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    report = workdir / "report-xss.html"
    done = _cli("report", str(scored["verdicts"]), "--summary", str(scored["summary"]), "--out", str(report),
                "--pdf", cwd=workdir)
    assert done.returncode == 0, done.stderr
    pdf = report.with_suffix(".pdf")  # printed by headless Chromium
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000 and "PDF written to" in done.stdout
    driver = browser
    driver.get(report.as_uri())  # type: ignore[attr-defined]
    _no_alert(driver)
    assert "pwned" not in driver.title  # type: ignore[attr-defined]
    assert driver.find_elements(By.CSS_SELECTOR, "script, iframe, img, #jslink") == []  # type: ignore[attr-defined]
    assert len(driver.find_elements(By.CSS_SELECTOR, "figure svg")) >= 1  # type: ignore[attr-defined]
    driver.save_screenshot(str(shots / "report.png"))  # type: ignore[attr-defined]


def _get(url: str, **kw: object) -> tuple[int, str, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, **kw), timeout=30) as response:  # type: ignore[arg-type]
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_csrf_headers_and_tokens(server: str, scored: dict, workdir: Path) -> None:
    status, _, headers = _get(server + "/")
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]
    # a sign-off without the form's token is refused, and nothing is appended
    before = _cli("ledger", "head", "--format", "json", cwd=workdir).stdout
    status, body, _ = _get(server + "/verdict/1/signoff", method="POST",
                           data=b"decision=confirmed&by=Mallory", headers={"Origin": server})
    assert status == 403 and "security token" in body
    status, body, _ = _get(server + "/verdict/1/signoff", method="POST", data=b"decision=confirmed&by=Mallory&csrf=x",
                           headers={"Origin": "https://evil.example", "Cookie": "conformance_csrf=x"})
    assert status == 403
    assert _cli("ledger", "head", "--format", "json", cwd=workdir).stdout == before
    status, _, _ = _get(server + "/static/..%2f..%2fpyproject.toml")
    assert status == 404
    # off 127.0.0.1 without a token: refused before it listens
    refused = _cli("review", "--host", "0.0.0.0", "--port", str(_free_port()), cwd=workdir)
    assert refused.returncode == 2 and "--token" in refused.stderr and "Traceback" not in refused.stderr
    token = "a-test-token-of-enough-length"
    proc, port = _serve(workdir, "--host", "0.0.0.0", env={**os.environ, "CONFORMANCE_REVIEW_TOKEN": token})
    try:
        assert _get(f"http://127.0.0.1:{port}/")[0] == 401
        assert _get(f"http://127.0.0.1:{port}/", headers={"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
        status, _, headers = _get(f"http://127.0.0.1:{port}/?token={token}")
        assert status == 303 and f"conformance_token={token}" in headers.get("set-cookie", "")
        assert _get(f"http://127.0.0.1:{port}/", headers={"Authorization": f"Bearer {token}"})[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
