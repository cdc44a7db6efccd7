"""Which ledger entries a query returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from conformance.ledger.errors import LedgerError
from conformance.verdict import VERDICTS


@dataclass(frozen=True)
class Filters:
    """Which verdict entries ``query`` returns; ``None`` means any. Times are ISO 8601, compared in UTC."""

    model_version: str | None = None
    input_class: str | None = None
    verdict: str | None = None
    baseline_version: int | None = None
    since: str | None = None
    until: str | None = None
    record_id: str | None = None
    run_id: str | None = None
    limit: int | None = None
    #: ``True``: only verdicts with at least one sign-off; ``False``: only verdicts with none.
    reviewed: bool | None = None

    def __post_init__(self) -> None:
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise LedgerError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc_iso(value, name))
        if self.limit is not None and self.limit < 1:
            raise LedgerError(f"limit must be at least 1, got {self.limit}")


def utc_iso(value: str, name: str = "time") -> str:
    """An ISO 8601 date or time as ``YYYY-MM-DDTHH:MM:SS+00:00`` (naive times are taken as UTC)."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise LedgerError(f"{name} must be an ISO 8601 date or time such as 2026-06-16 or "
                          f"2026-06-16T09:00:00Z, got {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).isoformat(timespec="seconds")
