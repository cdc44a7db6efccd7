"""Progress on long work: a bar on a terminal, a log line now and then otherwise.

``build`` and ``score`` can run for minutes. On a terminal they draw a tqdm bar (count, rate, ETA); when
standard error is not a terminal (a pipeline's log, a notebook) they print one line every
``every`` seconds and one at the end, so that a log shows the work moving. ``enabled=False`` (the CLI's
``--no-progress``) silences both.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

#: Seconds between two log lines when standard error is not a terminal.
LOG_EVERY_SECONDS = 30.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Count work done; ``enabled``: ``None`` for a bar on a terminal and log lines otherwise, ``True``
    for a bar always, ``False`` for nothing. ``bar=False``: log lines only (nothing on a terminal)."""

    def __init__(self, *, desc: str, total: int | None = None, unit: str = "record", enabled: bool | None = None,
                 every: float = LOG_EVERY_SECONDS, stream: TextIO | None = None, bar: bool = True) -> None:
        self.desc, self.total, self.unit, self.every = desc, total, unit, every
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.mode = "off" if enabled is False else ("bar" if enabled or tty else "lines")
        if self.mode == "bar" and not bar:
            self.mode = "off"  # the caller's own bars show the work on a terminal
        self.done = 0
        self.started = self._last = time.monotonic()
        self._bar: Any = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last >= self.every:
                self._last = now
                self._line(now)

    def _line(self, now: float, *, final: bool = False) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        count = f"{self.done:,}" + (f" of {self.total:,}" if self.total else "")
        text = f"{self.desc}: {count} {self.unit}s"
        if final:
            text += f" in {_duration(elapsed)} ({rate:.1f}/s)"
        else:
            if self.total:
                text += f" ({100 * self.done / self.total:.0f} %)"
            text += f", {rate:.1f}/s"
            if self.total and rate > 0:
                text += f", ETA {_duration((self.total - self.done) / rate)}"
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and time.monotonic() - self.started >= self.every:
            self._line(time.monotonic(), final=True)  # a short job's log stays quiet
        self.mode = "off"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
