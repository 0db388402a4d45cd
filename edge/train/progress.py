"""A progress bar for training epochs: iterations, running means of the loss terms, speed and ETA.

On a terminal it redraws one line on stderr (``\\r``); anywhere else (a log file, CI, ``nohup``) it logs
a line through ``logging`` at most every ``log_interval`` seconds and once at the end, so logs stay
readable. Disabled bars (ranks other than 0) do nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Dict, Optional

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """Seconds -> ``H:MM:SS`` (or ``M:SS`` under an hour)."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Track one epoch of ``total`` iterations.

    ``update(terms)`` after each iteration with that iteration's loss terms (name -> float); ``means``
    holds their running means; ``close()`` ends the line and returns the means.
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        enabled: bool = True,
        stream: Optional[IO[str]] = None,
        tty: Optional[bool] = None,
        log_interval: float = 30.0,
        width: int = 20,
        extra_eta_iters: int = 0,
    ):
        self.total = max(0, int(total))
        self.desc = desc
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty) if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_interval = float(log_interval)
        self.width = int(width)
        self.extra_eta_iters = int(extra_eta_iters)
        self.count = 0
        self.sums: Dict[str, float] = {}
        self.start = time.perf_counter()
        self._last_emit = self.start
        self._closed = False
        self.postfix = ""

    @property
    def means(self) -> Dict[str, float]:
        return {k: v / max(1, self.count) for k, v in self.sums.items()}

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float:
        """Seconds left in this epoch plus ``extra_eta_iters`` (e.g. the remaining epochs)."""
        rate = self.rate()
        left = (self.total - self.count) + self.extra_eta_iters
        return left / rate if rate > 0 else float("nan")

    def update(self, terms: Optional[Dict[str, float]] = None, n: int = 1) -> None:
        self.count += n
        for k, v in (terms or {}).items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if now - self._last_emit >= 0.1 or self.count >= self.total:
                self._last_emit = now
                self.stream.write("\r" + self.line() + "\033[K")
                self.stream.flush()
        elif now - self._last_emit >= self.log_interval and self.count < self.total:
            self._last_emit = now
            log.info("%s", self.line())

    def line(self) -> str:
        frac = self.count / self.total if self.total else 1.0
        filled = int(round(self.width * min(1.0, frac)))
        bar = "#" * filled + "." * (self.width - filled)
        terms = " ".join(f"{k} {v:.4f}" for k, v in self.means.items())
        rate = self.rate()
        eta = self.eta()
        eta_text = format_duration(eta) if eta == eta else "?"
        speed = f"{rate:.2f} it/s" if rate >= 1 or rate == 0 else f"{1.0 / rate:.2f} s/it"
        parts = [p for p in (self.desc, f"[{bar}] {self.count}/{self.total}", terms, f"{speed} ETA {eta_text}",
                             self.postfix) if p]
        return " ".join(parts)

    def close(self) -> Dict[str, float]:
        if self._closed:
            return self.means
        self._closed = True
        if self.enabled:
            if self.tty:
                self.stream.write("\r" + self.line() + "\033[K\n")
                self.stream.flush()
            else:
                log.info("%s", self.line())
        return self.means
