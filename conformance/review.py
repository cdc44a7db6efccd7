"""``conformance review``: a local web page over the ledger and the registry, to read verdicts and sign off.

A Starlette application served by uvicorn. Pages: the summary (runs, groups, counts), the verdict list with
filters (verdict, model version, input class, run, time, reviewed or not), and a verdict's page (its input,
output, the nearest approved outputs as text, the reason, every sign-off in order, and the sign-off form). A
sign-off is appended to the ledger as its own entry (:func:`conformance.api.signoff`); it never changes the
verdict.

Safe by construction:

* it binds 127.0.0.1 unless told otherwise, and on any other address refuses to start without a token, which
  every request must then carry (``?token=`` once, kept in a cookie; or an ``Authorization: Bearer`` header);
* a state-changing request (the sign-off form's POST) carries a CSRF token that must match its cookie
  (double submit, ``SameSite=Strict``), and its ``Origin``, when sent, must be this server;
* every page is rendered by Jinja2 with autoescaping, so model text is always text, and is served with a
  Content-Security-Policy that allows no script at all (the pages have none), no frames, no outside source;
* no request parameter reaches a file path: the only file served is the package's own style sheet, by a
  fixed route.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections import Counter
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlencode

from conformance.errors import ConformanceError
from conformance.verdict import VERDICTS

TOKEN_ENV = "CONFORMANCE_REVIEW_TOKEN"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
DECISIONS = ("confirmed", "false_alarm", "escalated")
DECISION_WORDS = {"confirmed": "confirmed: out of bounds", "false_alarm": "false alarm",
                  "escalated": "escalated for further review"}
PAGE = 500  # verdicts listed per page
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise ConformanceError(f"review on {host} would be reachable from other machines: give a token with --token "
                               f"or the {TOKEN_ENV} environment variable (every request must then carry it), or "
                               "serve on 127.0.0.1")
    if token is not None and len(token) < 16:
        raise ConformanceError("the review token must be at least 16 characters (try: python -c "
                               "\"import secrets; print(secrets.token_urlsafe(24))\")")


class Review:
    """The application's state: the ledger, the registry (read lazily), the token and the CSRF secret."""

    def __init__(self, *, ledger: str | None = None, token: str | None = None, registry: Any = None) -> None:
        from conformance.ledger import Ledger

        self.book = Ledger(ledger, create=False)
        self.token = token
        self._registry = registry
        self._baselines: dict[str, Any] = {}

    # -- data ------------------------------------------------------------------------------------------------
    def entries(self, filters: Any = None) -> list[tuple[int, dict[str, Any]]]:
        """Verdict entries matching ``filters``: (seq, content), in chain order (sign-offs are not verdicts)."""
        return [(entry.seq, entry.content) for entry in self.book.query(filters)]

    def signoffs(self, record_ids: Any) -> dict[int, list[dict[str, Any]]]:
        """The sign-offs of these records, by the seq of the verdict entry each signs, oldest first."""
        out: dict[int, list[dict[str, Any]]] = {}
        for signoff in self.book.signoffs(str(r) for r in record_ids if r is not None):
            item = signoff.to_dict()
            out.setdefault(int(item["signed_seq"]), []).append(item)
        return out

    def baseline(self, uri: str | None) -> Any:
        """The report's view of a baseline (texts, calibration), read once from the registry; None without one."""
        if not uri:
            return None
        if uri not in self._baselines:
            from conformance import report

            if self._registry is None:
                from conformance.registry import Registry

                self._registry = Registry()
            self._baselines[uri] = report.baseline_views([{"baseline": uri}], self._registry).get(uri)
        return self._baselines[uri]


def create_app(review: Review) -> Any:
    """The Starlette application over ``review``."""
    from importlib import resources

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
    from starlette.routing import Route

    from conformance import report
    from conformance.ledger import Filters
    from conformance.ledger.errors import LedgerError

    env = report.environment()
    style = resources.files("conformance").joinpath("templates/review.css").read_text(encoding="utf-8")

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(decision_words=DECISION_WORDS, decisions=DECISIONS, **context)
        return HTMLResponse(html, status_code=status)

    def problem(message: str, status: int = 400) -> HTMLResponse:
        return page("review_problem.html.j2", status=status, message=message)

    async def summary(request: Request) -> Response:
        verdicts = review.entries()
        reviewed = len(review.entries(Filters(reviewed=True)))
        runs: dict[str, dict[str, Any]] = {}
        groups: Counter[tuple[str, str]] = Counter()
        flagged: Counter[tuple[str, str]] = Counter()
        for _, content in verdicts:
            v = content["verdict"]
            run = runs.setdefault(str(content.get("run_id")), {"run_id": content.get("run_id"), "n": 0,
                                                               "out": 0, "first": v.get("scored_at")})
            run["n"] += 1
            run["out"] += v.get("verdict") == "out_of_bounds"
            key = (str(v.get("model_version")), str(v.get("input_class")))
            groups[key] += 1
            flagged[key] += v.get("verdict") == "out_of_bounds"
        counts = Counter(content["verdict"].get("verdict") for _, content in verdicts)
        return page("review_summary.html.j2", counts=counts, runs=list(runs.values()), n=len(verdicts),
                    groups=sorted(groups.items()), flagged=flagged, reviewed=reviewed, head=review.book.head())

    async def listing(request: Request) -> Response:
        q = request.query_params
        chosen = {k: (q.get(k) or "").strip() for k in ("verdict", "model_version", "input_class", "run", "since",
                                                          "until", "reviewed")}
        if chosen["verdict"] and chosen["verdict"] not in VERDICTS:
            return problem(f"verdict must be one of {', '.join(VERDICTS)}")
        if chosen["reviewed"] not in ("", "yes", "no"):
            return problem("reviewed must be yes or no")
        try:
            filters = Filters(verdict=chosen["verdict"] or None, model_version=chosen["model_version"] or None,
                              input_class=chosen["input_class"] or None, run_id=chosen["run"] or None,
                              since=chosen["since"] or None, until=chosen["until"] or None,
                              reviewed={"yes": True, "no": False}.get(chosen["reviewed"]))
        except LedgerError as exc:
            return problem(str(exc))
        verdicts = review.entries(filters)
        total = len(verdicts)
        shown = verdicts[:PAGE]
        signoffs = review.signoffs({c["verdict"].get("record_id") for _, c in shown})
        return page("review_list.html.j2", rows=shown, total=total, shown=len(shown), chosen=chosen,
                    signoffs=signoffs, verdict_values=VERDICTS)

    def csrf_of(request: Request) -> str:
        return request.cookies.get("conformance_csrf") or secrets.token_urlsafe(32)

    async def verdict_page(request: Request) -> Response:
        seq = int(request.path_params["seq"])
        entry = review.book.get(seq)
        if entry is None:
            return problem(f"the ledger has no entry #{seq}", 404)
        content = entry.content
        if entry.is_signoff:
            return problem(f"entry #{seq} is a sign-off, not a verdict", 404)
        verdict = content["verdict"]
        row = {**(content.get("record") or {}), **verdict}
        view = review.baseline(verdict.get("baseline"))
        nearest = [{"record_id": rid, **((view.texts.get(str(rid)) if view is not None else None) or {})}
                   for rid in verdict.get("nearest") or []]
        signoffs = review.signoffs([verdict.get("record_id")]).get(seq, [])
        token = csrf_of(request)
        response = page("review_verdict.html.j2", seq=seq, entry_hash=entry.entry_hash, row=row, content=content,
                        nearest=nearest, compared=report.compared_phrase(row, view), baseline=view,
                        signoffs=signoffs, csrf=token, message=request.query_params.get("done"))
        response.set_cookie("conformance_csrf", token, httponly=True, samesite="strict", path="/")
        return response

    async def signoff(request: Request) -> Response:
        seq = int(request.path_params["seq"])
        origin = request.headers.get("origin")
        if origin is not None and origin not in ("null",) and origin.rstrip("/") != str(request.base_url).rstrip("/"):
            return problem("this form can only be sent from this review page", 403)
        body = (await request.body()).decode("utf-8", errors="replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        cookie = request.cookies.get("conformance_csrf")
        if not cookie or not hmac.compare_digest(cookie, form.get("csrf", "")):
            return problem("the form's security token is missing or stale: reload the verdict page and sign again",
                           403)
        entry = review.book.get(seq)
        if entry is None or entry.is_signoff:
            return problem(f"the ledger has no verdict #{seq}", 404)
        record_id = entry.content["verdict"].get("record_id")
        from conformance import api

        try:
            api.signoff(record_id, decision=form.get("decision", ""), by=form.get("by", ""),
                        comment=form.get("comment") or None, seq=seq, ledger=review.book)
        except ConformanceError as exc:
            return problem(str(exc))
        return RedirectResponse(f"/verdict/{seq}?" + urlencode({"done": "signed"}), status_code=303)

    async def stylesheet(request: Request) -> Response:
        return Response(style, media_type="text/css")

    app = Starlette(routes=[
        Route("/", summary), Route("/verdicts", listing), Route("/verdict/{seq:int}", verdict_page),
        Route("/verdict/{seq:int}/signoff", signoff, methods=["POST"]), Route("/static/review.css", stylesheet),
    ])

    async def guard(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request = Request(scope)
        if review.token is not None:
            given = request.cookies.get("conformance_token") or request.query_params.get("token") or ""
            bearer = request.headers.get("authorization", "")
            if bearer.lower().startswith("bearer "):
                given = bearer[7:]
            if not hmac.compare_digest(given.encode(), review.token.encode()):
                response: Response = PlainTextResponse("a review token is required: open the address printed by "
                                                       "conformance review", status_code=401)
                await _secured(response)(scope, receive, send)
                return
            if request.query_params.get("token"):  # keep it in a cookie, and out of the address bar
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
                response.set_cookie("conformance_token", review.token, httponly=True, samesite="strict", path="/")
                await _secured(response)(scope, receive, send)
                return

        async def send_secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode().lower() not in {h.lower() for h in _HEADERS}]
                headers += [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_secured)

    return guard


def _secured(response: Any) -> Any:
    for key, value in _HEADERS.items():
        response.headers[key] = value
    return response


def serve(*, host: str = "127.0.0.1", port: int = 8765, ledger: str | None = None, token: str | None = None) -> None:
    """Serve the review page until interrupted."""
    check_binding(host, token)
    import uvicorn

    review = Review(ledger=ledger, token=token)
    shown = "localhost" if is_loopback(host) else host
    address = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"reviewing ledger {review.book.url} at {address} (Ctrl-C to stop)", flush=True)
    uvicorn.run(create_app(review), host=host, port=port, log_level="warning", server_header=False,
                date_header=False)
