"""Progress events and the waiting ticker.

A request to an image model can take minutes (gpt-image-2 at high quality: ~3 min median). A bar frozen at
40 % for three minutes looks like a hang, so while a request runs a :class:`Ticker` thread reports the elapsed
time against the range :func:`capabilities.expected_seconds` predicts for the model, quality and size. The
fraction creeps towards (but never reaches) the end of the waiting phase, and the message says the truth:
"Waiting for gpt-image-2 (12 s of ~60 s)", or "(75 s, longer than usual ~60 s)" once past it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Where each phase sits on one item's 0..1 scale. Waiting fills the span between upload and saving.
PHASE_START = {"upload": 0.0, "waiting": 0.05, "saving": 0.85, "compositing": 0.9, "done": 1.0}


@dataclass
class Progress:
    """One progress event for one item; ``fraction`` is that item's own 0..1."""

    phase: str
    fraction: float
    message: str
    item: str = ""
    elapsed: float | None = None
    expected: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "progress",
            "item": self.item,
            "phase": self.phase,
            "fraction": round(max(0.0, min(1.0, self.fraction)), 4),
            "message": self.message,
        }
        if self.elapsed is not None:
            data["elapsed"] = round(self.elapsed, 1)
        if self.expected is not None:
            data["expected"] = [round(self.expected[0]), round(self.expected[1])]
        data.update(self.extra)
        return data


ProgressCallback = Callable[[Progress], None]


def no_progress(_event: Progress) -> None:
    """The default callback: callers that do not watch progress pass nothing."""


def waiting_fraction(elapsed: float, expected: tuple[float, float]) -> float:
    """Item fraction while waiting: linear up to the typical time, then slowing towards (never at) 'saving'."""
    start, end = PHASE_START["waiting"], PHASE_START["saving"]
    typical, worst = expected
    span = end - start
    if typical <= 0:
        return start
    if elapsed <= typical:
        return start + span * 0.8 * (elapsed / typical)
    # Past the typical time: approach the remaining 20 % asymptotically, so the bar keeps moving.
    over = (elapsed - typical) / max(worst - typical, 1.0)
    return start + span * (0.8 + 0.2 * (1 - 1 / (1 + over)))


def waiting_message(model: str, elapsed: float, expected: tuple[float, float]) -> str:
    typical, worst = expected
    if elapsed <= typical:
        return f"Waiting for {model} ({elapsed:.0f} s of ~{typical:.0f} s)"
    if elapsed <= worst:
        return f"Waiting for {model} ({elapsed:.0f} s, usually ~{typical:.0f}-{worst:.0f} s)"
    return f"Waiting for {model} ({elapsed:.0f} s, longer than usual ~{typical:.0f}-{worst:.0f} s; still waiting)"


class Ticker:
    """Context manager: emits a 'waiting' event at once and then every ``interval`` seconds until it exits.

    The clock is injectable so tests can check the messages without sleeping.
    """

    def __init__(
        self,
        callback: ProgressCallback,
        *,
        model: str,
        expected: tuple[float, float],
        item: str = "",
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.callback = callback
        self.model = model
        self.expected = expected
        self.item = item
        self.interval = interval
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    def event(self) -> Progress:
        elapsed = max(0.0, self.clock() - self._start)
        return Progress(
            phase="waiting",
            fraction=waiting_fraction(elapsed, self.expected),
            message=waiting_message(self.model, elapsed, self.expected),
            item=self.item,
            elapsed=elapsed,
            expected=self.expected,
        )

    def _run(self) -> None:
        while True:
            try:
                self.callback(self.event())
            except Exception:  # noqa: S110 - a broken progress consumer must never stop the request
                pass
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Ticker:
        self._start = self.clock()
        self._thread = threading.Thread(target=self._run, name=f"ticker-{self.item}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
