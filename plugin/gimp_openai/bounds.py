"""The one table of numeric limits: every number a person or a host can hand the engine, with its range.

Why one table: the command line's options, the host job protocol (jobs.py), the stored settings and the
dialogs' ranges (manifest/procedures.json, checked against this table by a test) must agree, or a value one
door refuses walks in through another. An unbounded number is not harmless here: ``--feather 1e9`` asked
OpenCV for a Gaussian kernel of billions of taps and the process grew to ~23 GB before the kernel killed it;
``--timeout nan`` reached the HTTP client and ended in an internal error. So every number is checked here,
NaN and infinity never pass, and a refusal is one line: what was wrong, the allowed range, what to do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

from .errors import GimpOpenAIError, InvalidInputError


@dataclass(frozen=True)
class Bound:
    """The allowed range of one number, with the words a refusal uses."""

    name: str
    minimum: float
    maximum: float
    kind: type  # int or float
    unit: str
    meaning: str

    def allowed(self) -> str:
        """``"a whole number from 1 to 10"``: the range as a person reads it."""
        what = "a whole number" if self.kind is int else "a number"
        unit = f" {self.unit}" if self.unit else ""
        return f"{what} from {_show(self.minimum)} to {_show(self.maximum)}{unit}"


def _show(number: float) -> str:
    return f"{number:,.0f}" if float(number).is_integer() else f"{number:g}"


#: name -> Bound. The names are the job protocol's field names (and the settings' names where they are settings).
BOUNDS: dict[str, Bound] = {
    bound.name: bound
    for bound in (
        Bound("n", 1, 10, int, "", "the number of results to ask for"),
        Bound("feather", 0.0, 200.0, float, "px", "the extra softening of the layer mask's edge"),
        Bound("context_padding", 0.0, 2.0, float, "x the selection's size",
              "the context added on every side of the selection"),
        Bound("partial_images", 0, 3, int, "",
              "the number of previews streamed while the model works (0: none)"),
        Bound("concurrency", 1, 16, int, "requests", "the number of requests sent at once"),
        Bound("read_timeout", 1.0, 3600.0, float, "s", "how long to wait for the server's answer"),
        Bound("connect_timeout", 0.5, 300.0, float, "s", "how long to wait for a connection to the server"),
        Bound("max_retries", 0, 10, int, "", "how often a failed request is retried"),
        Bound("coordinate", -1_000_000, 1_000_000, int, "px", "a position in the image"),
        Bound("region_side", 1, 1_000_000, int, "px", "the width or height of a region"),
        Bound("target_side", 1, 100_000, int, "px", "the width or height of the image sent to the model"),
        Bound("max_cost", 0.0, 100_000.0, float, "dollars", "the estimated cost above which a run asks first"),
        Bound("history_limit", 1, 1_000_000, int, "results", "how many history results to list"),
        Bound("index", 0, 10, int, "", "which result of a group to keep (0: the one showing)"),
        Bound("amount", 0, 20_000, int, "px", "the pixels Expand Canvas adds on a side"),
        Bound("band", 0, 256, int, "px", "the band of the old picture repainted along the new area's edge"),
        Bound("poll", 1.0, 3600.0, float, "s", "the time between two looks at a submitted batch"),
        Bound("warm_seconds", 0.0, 86_400.0, float, "s", "how long an engine kept warm waits for the next run"),
    )
}


T = TypeVar("T")


class OutOfBounds(InvalidInputError):
    """A number outside its range (or not a finite number at all)."""

    code = "out_of_range"


def refusal(name: str, shown: str, label: str) -> str:
    """The one line that refuses ``shown`` for ``label``: ``"--feather 1e9 is not allowed: ..."``."""
    bound = BOUNDS[name]
    return (f"{label} {shown} is not allowed: {bound.meaning} must be {bound.allowed()}; "
            f"use a value in that range.")


def is_within(name: str, value: object) -> bool:
    """True when ``value`` is a finite number of the right kind inside the range of ``name``."""
    bound = BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if bound.kind is int and not isinstance(value, int):
        return False
    if isinstance(value, float) and not math.isfinite(value):  # an int is finite (and may be too big for float)
        return False
    return bound.minimum <= value <= bound.maximum


def check(name: str, value: T, label: str, error: type[GimpOpenAIError] = OutOfBounds) -> T:
    """``value`` when it is within the range of ``name``; otherwise ``error`` with the one-line refusal."""
    if not is_within(name, value):
        raise error(refusal(name, repr(value) if isinstance(value, str) else str(value), label), hint="")
    return value


def parse(name: str, text: str, label: str) -> float:
    """A number typed by a person (``"10"``, ``"0.5"``), parsed by the kind of ``name`` and checked."""
    bound = BOUNDS[name]
    shown = text if text.strip() and text.isprintable() and len(text) <= 40 else repr(text[:40])
    try:
        value: float = int(text.strip()) if bound.kind is int else float(text.strip())
    except ValueError:
        raise OutOfBounds(refusal(name, shown, label), hint="") from None
    if not is_within(name, value):
        raise OutOfBounds(refusal(name, shown, label), hint="")
    return value
