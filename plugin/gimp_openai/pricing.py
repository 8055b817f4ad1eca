"""What an image costs: the server's ``usage`` turned into dollars, and an estimate before anything is paid.

Why a table of its own: OpenAI bills the GPT image models by tokens (text in, image in, image out), every answer
says how many (``usage``), and the prices change more often than the rules of a family. So each price row
carries the date it was read and where from, a user can replace or add rows in the config file (``prices``), and
a model with no row shows its tokens only, never a made-up dollar figure.

The estimate (:func:`estimate`) uses the same prices and the token rules below: input text (about four
characters a token), input images (a base plus a share per 512-pixel tile, the local server's model, since OpenAI
publishes no rule for these models), and output tokens per 1024x1024 image at each quality, scaled by pixels.
``auto`` quality is estimated as the rule's ``auto_quality`` with an upper bound at ``high`` (the model picks),
and the cost guard compares the upper bound. The local server's ``usage`` reads the same token rules, measured
on what it really received and returned, so ``tests/engine/test_pricing_e2e.py`` can hold the estimate to
within 25 % of the cost after the run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from . import capabilities as caps

#: The default threshold in dollars above which the CLI asks before sending (setting ``max_cost``).
DEFAULT_MAX_COST = 1.0

PRICE_FIELDS = ("text_input", "image_input", "image_output", "text_output")


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens for one model (or a family of ids), with when and where it was read.
    ``text_output`` None: not published; output text tokens are then charged at the image output price (the
    dearer reading, so a figure is never too low)."""

    label: str
    text_input: float
    image_input: float
    image_output: float
    text_output: float | None
    as_of: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "text_input": self.text_input, "image_input": self.image_input,
                "image_output": self.image_output, "text_output": self.text_output, "as_of": self.as_of,
                "source": self.source}


_SNAPSHOT = r"(-\d{4}-\d{2}-\d{2})?"

#: First match wins. Dated, sourced; the 2.5 and 2.6 model pages list the same token prices as gpt-image-2.
PRICES: tuple[tuple[re.Pattern[str], Price], ...] = (
    (re.compile(rf"^gpt-image-2\.6-(flare|sunburst){_SNAPSHOT}$"),
     Price("gpt-image-2.6", 5.00, 8.00, 30.00, None, "2026-11-04",
           "https://developers.openai.com/api/docs/models/gpt-image-2.6-sunburst")),
    (re.compile(rf"^gpt-image-2\.5-(flare|sunburst){_SNAPSHOT}$"),
     Price("gpt-image-2.5", 5.00, 8.00, 30.00, None, "2026-09-09",
           "https://developers.openai.com/api/docs/pricing (gpt-image-2.5: the same token prices as gpt-image-2)")),
    (re.compile(rf"^gpt-image-2{_SNAPSHOT}$"),
     Price("gpt-image-2", 5.00, 8.00, 30.00, 10.00, "2026-04-21",
           "https://developers.openai.com/api/docs/pricing (gpt-image-2)")),
    (re.compile(rf"^gpt-image-1-mini{_SNAPSHOT}$"),
     Price("gpt-image-1-mini", 2.00, 2.50, 8.00, None, "2025-10-06",
           "https://developers.openai.com/api/docs/models/gpt-image-1-mini")),
    (re.compile(rf"^gpt-image-1{_SNAPSHOT}$"),
     Price("gpt-image-1", 5.00, 10.00, 40.00, None, "2025-04-23",
           "https://developers.openai.com/api/docs/models/gpt-image-1")),
)


@dataclass(frozen=True)
class TokenRule:
    """How many tokens a request of one family uses, for the estimate (and the local server's ``usage``)."""

    #: output image tokens of one 1024x1024 image, per quality; other sizes scale with their pixels
    output_1024: tuple[tuple[str, int], ...]
    auto_quality: str = "medium"  # what ``auto`` is estimated as (the upper bound takes ``high``)
    image_base: int = 65  # tokens per input image ...
    image_per_tile: int = 129  # ... plus this per started 512x512 tile
    tile: int = 512
    chars_per_text_token: int = 4
    source: str = ""

    def output_tokens(self, quality: str, width: int, height: int) -> int:
        table = dict(self.output_1024)
        per = table.get(quality, table.get(self.auto_quality, 0))
        return int(round(per * width * height / (1024 * 1024)))

    def image_tokens(self, width: int, height: int) -> int:
        return self.image_base + self.image_per_tile * math.ceil(width / self.tile) * math.ceil(height / self.tile)

    def text_tokens(self, prompt: str) -> int:
        return max(1, len(prompt or "") // self.chars_per_text_token)


_GPT2_OUTPUT = (("low", 200), ("medium", 1767), ("high", 7033))
_GPT2_SOURCE = ("output: OpenAI's per-image examples for gpt-image-2 at 1024x1024 ($0.006 / $0.053 / $0.211 at "
                "$30 per 1M tokens), 2026-04-21; input: the local server's model (no published rule)")

#: family name -> token rule. xhigh and max have no published figures: 1.5x and 2x high, assumed.
TOKEN_RULES: dict[str, TokenRule] = {
    caps.GPT_IMAGE_1: TokenRule(output_1024=(("low", 272), ("medium", 1056), ("high", 4160)),
                                source="gpt-image-1's published output tokens per 1024x1024 image"),
    caps.GPT_IMAGE_2: TokenRule(output_1024=_GPT2_OUTPUT, source=_GPT2_SOURCE),
    caps.GPT_IMAGE_2_5: TokenRule(output_1024=(*_GPT2_OUTPUT, ("xhigh", 10550), ("max", 14066)),
                                  source=_GPT2_SOURCE + "; xhigh/max assumed 1.5x/2x high"),
    caps.GPT_IMAGE_2_6: TokenRule(output_1024=(*_GPT2_OUTPUT, ("xhigh", 10550), ("max", 14066)),
                                  source=_GPT2_SOURCE + "; xhigh/max assumed 1.5x/2x high"),
}


def token_rule(family: caps.Family) -> TokenRule | None:
    return TOKEN_RULES.get(family.name)


# --- prices, with the user's overrides ---------------------------------------------------------------------


def parse_override(text: str) -> dict[str, Any]:
    """``"text_input=5,image_input=8,image_output=30"`` (``config set prices.<id>=...``) -> a price row.
    ValueError naming what is wrong."""
    row: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in (*PRICE_FIELDS, "as_of"):
            raise ValueError(f"{part!r}: write NAME=VALUE with NAME one of {', '.join(PRICE_FIELDS)}, as_of")
        row[name] = value.strip()
    return check_override(row)


def check_override(row: Mapping[str, Any]) -> dict[str, Any]:
    """A price row from the config file: numbers from 0 to 10,000 dollars per 1M tokens, and the three
    required ones present. ValueError otherwise."""
    out: dict[str, Any] = {}
    for name in PRICE_FIELDS:
        if name not in row or row[name] in (None, ""):
            if name != "text_output":
                raise ValueError(f"{name} is missing")
            continue
        try:
            value = float(row[name])
        except (TypeError, ValueError):
            raise ValueError(f"{name}={row[name]!r} is not a number") from None
        if not math.isfinite(value) or not 0 <= value <= 10_000:
            raise ValueError(f"{name}={row[name]!r} must be from 0 to 10,000 dollars per 1M tokens")
        out[name] = value
    as_of = str(row.get("as_of") or "")
    if as_of:
        try:
            date.fromisoformat(as_of)
        except ValueError:
            raise ValueError(f"as_of={as_of!r} is not a date (YYYY-MM-DD)") from None
        out["as_of"] = as_of
    return out


def coerce_overrides(value: Any) -> dict[str, dict[str, Any]]:
    """The ``prices`` setting as read from the file: rows that do not check out are left out (with the
    table's price, or none, in force)."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(value, Mapping):
        return out
    for model, row in value.items():
        try:
            out[str(model)] = parse_override(row) if isinstance(row, str) else check_override(dict(row))
        except (TypeError, ValueError):
            continue
    return out


def price_for(model: str, overrides: Mapping[str, Mapping[str, Any]] | None = None,
              model_rules: Mapping[str, str] | None = None) -> Price | None:
    """The price of ``model``: the user's row for the id, else for its family, else the table's; None when
    nobody knows it (a compatible server's own model): callers show tokens only."""
    overrides = overrides or {}
    family = caps.family_for(model, model_rules).name if model else ""
    for key in (model, family):
        row = overrides.get(key) if key else None
        if row:
            return Price(key, float(row["text_input"]), float(row["image_input"]), float(row["image_output"]),
                         float(row["text_output"]) if row.get("text_output") is not None else None,
                         str(row.get("as_of") or ""), "your settings (prices)")
    for pattern, price in PRICES:
        if pattern.match(model or ""):
            return price
    return None


#: The Batch API's price: half of every token price (https://platform.openai.com/docs/guides/batch, "50% cost
#: discount compared to synchronous APIs").
BATCH_DISCOUNT = 0.5
BATCH_SOURCE = "https://platform.openai.com/docs/guides/batch (Batch API: 50% of the synchronous price)"


def batch_price(price: Price | None) -> Price | None:
    """``price`` as the Batch API charges it (None stays None: tokens only)."""
    if price is None:
        return None
    half = BATCH_DISCOUNT
    return Price(f"{price.label} (Batch API)", price.text_input * half, price.image_input * half,
                 price.image_output * half, price.text_output * half if price.text_output is not None else None,
                 price.as_of, f"{price.source}; {BATCH_SOURCE}")


# --- usage -> cost -------------------------------------------------------------------------------------------


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else 0


@dataclass
class Cost:
    """What one request (or a sum of them) used and cost. ``usd`` None: no price is known (tokens only)."""

    model: str
    input_text: int = 0
    input_image: int = 0
    output_image: int = 0
    output_text: int = 0
    usd: float | None = None
    as_of: str = ""
    source: str = ""
    requests: int = 1

    @property
    def input_tokens(self) -> int:
        return self.input_text + self.input_image

    @property
    def output_tokens(self) -> int:
        return self.output_image + self.output_text

    def add(self, other: Cost) -> Cost:
        """The sum of two costs (unknown dollars stay unknown: a sum never pretends)."""
        usd = None if self.usd is None or other.usd is None else self.usd + other.usd
        return Cost(self.model if self.model == other.model else "", self.input_text + other.input_text,
                    self.input_image + other.input_image, self.output_image + other.output_image,
                    self.output_text + other.output_text, usd, self.as_of or other.as_of,
                    self.source or other.source, self.requests + other.requests)

    def to_dict(self) -> dict[str, Any]:
        return {
            "usd": round(self.usd, 6) if self.usd is not None else None,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_tokens_details": {"text_tokens": self.input_text, "image_tokens": self.input_image},
            "output_tokens_details": {"image_tokens": self.output_image, "text_tokens": self.output_text},
            "model": self.model,
            "price_as_of": self.as_of or None,
            "price_source": self.source or None,
            "requests": self.requests,
            "text": self.text(),
        }

    def text(self) -> str:
        """``"$0.0532 (1,234 input + 1,767 output tokens; prices of 2026-04-21)"``, or tokens only."""
        tokens = f"{self.input_tokens:,} input + {self.output_tokens:,} output tokens"
        if self.usd is None:
            return f"{tokens} (no price known for {self.model or 'this model'})"
        when = f"; prices of {self.as_of}" if self.as_of else ""
        return f"{dollars(self.usd)} ({tokens}{when})"


def add_costs(costs: Iterable[Cost | None]) -> Cost | None:
    """The sum of several requests' costs, None when none of them carried usage."""
    total: Cost | None = None
    for cost in costs:
        if cost is not None:
            total = cost if total is None else total.add(cost)
    return total


def dollars(usd: float) -> str:
    """``$0.21``, ``$0.0532``, ``$12.40``: enough digits that a one-image figure is not shown as $0.00."""
    if usd >= 1:
        return f"${usd:,.2f}"
    if usd >= 0.1:
        return f"${usd:.3f}"
    return f"${usd:.4f}"


def cost_of(usage: Any, model: str, price: Price | None) -> Cost | None:
    """The cost of one answer's ``usage`` (the contract's ImageGenUsage); None when the answer has none.

    Output tokens not split into image and text (``output_tokens_details`` is optional) count as image tokens.
    """
    if not isinstance(usage, Mapping):
        return None
    details: Mapping[str, Any] = usage.get("input_tokens_details") or {}
    details = details if isinstance(details, Mapping) else {}
    input_total = _int(usage.get("input_tokens"))
    input_text = _int(details.get("text_tokens"))
    input_image = _int(details.get("image_tokens"))
    if input_text + input_image != input_total:  # no split, or one that does not add up: the rest at the dearer
        input_text = min(input_text, input_total)  # (image) price, so a figure is never too low
        input_image = input_total - input_text
    out_details: Mapping[str, Any] = usage.get("output_tokens_details") or {}
    out_details = out_details if isinstance(out_details, Mapping) else {}
    output_total = _int(usage.get("output_tokens"))
    output_text = min(_int(out_details.get("text_tokens")), output_total)
    output_image = output_total - output_text
    cost = Cost(model, input_text, input_image, output_image, output_text)
    if price is not None:
        text_out = price.text_output if price.text_output is not None else price.image_output
        cost.usd = (input_text * price.text_input + input_image * price.image_input
                    + output_image * price.image_output + output_text * text_out) / 1_000_000
        cost.as_of, cost.source = price.as_of, price.source
    return cost


def share(cost: Cost, parts: int) -> dict[str, Any]:
    """One image's share of a request's cost, for its history sidecar (the shares of a request add up to it)."""
    parts = max(1, parts)
    return {
        "usd": round(cost.usd / parts, 8) if cost.usd is not None else None,
        "input_tokens": cost.input_tokens / parts,
        "output_tokens": cost.output_tokens / parts,
        "request_usd": round(cost.usd, 8) if cost.usd is not None else None,
        "request_input_tokens": cost.input_tokens,
        "request_output_tokens": cost.output_tokens,
        "images_in_request": parts,
        "price_as_of": cost.as_of or None,
        "price_source": cost.source or None,
    }


# --- the estimate ----------------------------------------------------------------------------------------


@dataclass
class Estimate:
    """What a request should cost before it is sent. ``usd_upper`` differs from ``usd`` only for ``auto``
    quality (the model may choose high)."""

    model: str
    n: int
    size: tuple[int, int]
    quality: str
    quality_as: str
    input_tokens: int
    output_tokens: int
    output_tokens_upper: int
    usd: float | None
    usd_upper: float | None
    as_of: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def priced(self) -> bool:
        return self.usd is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "n": self.n, "size": f"{self.size[0]}x{self.size[1]}", "quality": self.quality,
            "quality_as": self.quality_as, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "output_tokens_upper": self.output_tokens_upper,
            "usd": round(self.usd, 6) if self.usd is not None else None,
            "usd_upper": round(self.usd_upper, 6) if self.usd_upper is not None else None,
            "price_as_of": self.as_of or None, "notes": list(self.notes), "text": self.text(),
        }

    def text(self) -> str:
        what = (f"{self.n} image{'s' if self.n != 1 else ''} of {self.size[0]}x{self.size[1]}, {self.model}, "
                f"quality {self.quality}")
        return f"{what}: {about(self.usd, self.usd_upper, self.input_tokens + self.output_tokens)}"


def about(usd: float | None, usd_upper: float | None, tokens: int) -> str:
    """An estimate's figure in words: ``about $0.0110``, with ``(up to $0.0420 if the model picks high)`` when
    ``auto`` quality leaves room, or ``about 1,234 tokens (no price known)``."""
    if usd is None or usd_upper is None:
        return f"about {tokens:,} tokens (no price known)"
    text = f"about {dollars(usd)}"
    if usd_upper > usd * 1.001:
        text += f" (up to {dollars(usd_upper)} if the model picks high)"
    return text


#: The multipart fields whose files are input images for request_tokens (the client and the local server alike).
IMAGE_FIELDS = ("image", "image[]", "markup")


def request_tokens(family: caps.Family, fields: Mapping[str, Any], uploads: Iterable[bytes] = ()) -> int:
    """The tokens one request takes from a tokens-per-minute budget, read off what it carries: the prompt, the
    uploaded images and markup (``uploads``, their headers only), and ``n`` images at the size and quality asked
    (``auto`` size: the first upload's, else 1024x1024; ``auto`` quality: the rule's ``auto_quality``).

    One rule for both sides of the wire: the client paces each request by it before sending, and the local
    server's ``--rate-limit-tokens`` counts it at admission, as OpenAI counts a request's tokens when it
    arrives. 0 for a family billed per image (no tokens to count)."""
    rule = token_rule(family)
    if rule is None:
        return 0
    from .imaging import image_size_of

    sizes: list[tuple[int, int]] = []
    for data in uploads:
        try:
            sizes.append(image_size_of(bytes(data)))
        except Exception:  # noqa: BLE001 - an unreadable upload is the server's to refuse; count a megapixel
            sizes.append((1024, 1024))
    size = caps.parse_size(str(fields.get("size") or "auto")) or (sizes[0] if sizes else (1024, 1024))
    try:
        n = max(1, min(int(str(fields.get("n") or 1)), 10))
    except ValueError:
        n = 1
    quality = str(fields.get("quality") or "auto")
    quality = quality if quality in dict(rule.output_1024) else rule.auto_quality
    counted = estimate("", family, n=n, size=size, quality=quality, prompt=str(fields.get("prompt") or ""),
                       input_images=sizes)  # the estimate's own arithmetic: a request and its estimate agree
    return counted.input_tokens + counted.output_tokens


def add_estimates(estimates: Sequence[Estimate]) -> dict[str, Any]:
    """The total of several estimates (a batch, a plan's items) as the plan answer and the CLI show it."""
    priced = all(e.usd is not None for e in estimates)
    usd = sum(e.usd or 0.0 for e in estimates) if priced else None
    upper = sum(e.usd_upper or 0.0 for e in estimates) if priced else None
    return {"usd": round(usd, 6) if usd is not None else None,
            "usd_upper": round(upper, 6) if upper is not None else None,
            "input_tokens": sum(e.input_tokens for e in estimates),
            "output_tokens": sum(e.output_tokens for e in estimates),
            "images": sum(e.n for e in estimates), "priced": priced}


def estimate(model: str, family: caps.Family, *, n: int, size: tuple[int, int], quality: str, prompt: str = "",
             input_images: Iterable[tuple[int, int]] = (), price: Price | None = None) -> Estimate:
    """Images x n x size x quality (plus the input text and images) in tokens, and in dollars at ``price``.

    ``size``: the output size sent (``auto`` sizes are the caller's guess, e.g. the input's size);
    ``input_images``: the pixel sizes of the images uploaded (the image, references, markup)."""
    rule = token_rule(family)
    quality = quality or "auto"
    quality_as = (rule.auto_quality if rule else "medium") if quality == "auto" else quality
    notes: list[str] = []
    if rule is None:
        return Estimate(model, n, size, quality, quality_as, 0, 0, 0, None, None,
                        notes=[f"{family.name} is billed per image, not by tokens; no estimate"])
    text_tokens = rule.text_tokens(prompt)
    image_tokens = sum(rule.image_tokens(w, h) for w, h in input_images)
    output = n * rule.output_tokens(quality_as, *size)
    upper = n * rule.output_tokens("high", *size) if quality == "auto" else output
    upper = max(upper, output)
    if quality == "auto":
        notes.append(f"quality auto estimated as {quality_as}; the upper bound takes high")
    usd = usd_upper = None
    as_of = ""
    if price is not None:
        base = (text_tokens * price.text_input + image_tokens * price.image_input) / 1_000_000
        usd = base + output * price.image_output / 1_000_000
        usd_upper = base + upper * price.image_output / 1_000_000
        as_of = price.as_of
    return Estimate(model, n, size, quality, quality_as, text_tokens + image_tokens, output, upper, usd, usd_upper,
                    as_of, notes)


# --- usage from history -------------------------------------------------------------------------------------


@dataclass
class UsageRow:
    day: str
    model: str
    images: int = 0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    usd: float = 0.0
    unpriced_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day, "model": self.model, "images": self.images,
                "input_tokens": round(self.input_tokens), "output_tokens": round(self.output_tokens),
                "usd": round(self.usd, 6), "unpriced_images": self.unpriced_images}


def _sidecar_day(data: Mapping[str, Any]) -> str | None:
    for key in ("time", "saved_at"):
        value = data.get(key)
        if isinstance(value, str) and len(value) >= 10:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()
            except ValueError:
                continue
    return None


def usage_from_history(folder: Path, since: date | None = None) -> list[UsageRow]:
    """Every paid image's share of its request's cost, summed by day (UTC) and model, oldest first.

    Reads the JSON sidecars only; an image saved before costs were recorded counts as an image without a price.
    A sidecar that cannot be read is skipped (the history folder is the user's; nothing here may fail a run)."""
    rows: dict[tuple[str, str], UsageRow] = {}
    try:
        sidecars = sorted(folder.glob("*.json"))
    except OSError:
        return []
    for path in sidecars:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "model" not in data:
            continue
        day = _sidecar_day(data)
        if day is None or (since is not None and day < since.isoformat()):
            continue
        model = str(data.get("model") or "?")
        row = rows.setdefault((day, model), UsageRow(day, model))
        row.images += 1
        cost: dict[str, Any] = data.get("cost") or {}
        cost = cost if isinstance(cost, dict) else {}
        for name in ("input_tokens", "output_tokens"):
            value = cost.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                setattr(row, name, getattr(row, name) + float(value))
        usd = cost.get("usd")
        if isinstance(usd, (int, float)) and not isinstance(usd, bool) and usd >= 0:
            row.usd += float(usd)
        else:
            row.unpriced_images += 1
    return sorted(rows.values(), key=lambda r: (r.day, r.model))


def format_usage(rows: Sequence[UsageRow]) -> str:
    """The table `gimp-openai usage` prints, with a total line."""
    header = ("DAY", "MODEL", "IMAGES", "INPUT TOKENS", "OUTPUT TOKENS", "COST")
    lines = [header]
    for r in rows:
        cost = dollars(r.usd) + (f" (+{r.unpriced_images} unpriced)" if r.unpriced_images else "")
        lines.append((r.day, r.model, str(r.images), f"{round(r.input_tokens):,}", f"{round(r.output_tokens):,}",
                      cost))
    unpriced = sum(r.unpriced_images for r in rows)
    total_cost = dollars(sum(r.usd for r in rows)) + (f" (+{unpriced} unpriced)" if unpriced else "")
    lines.append(("total", "", str(sum(r.images for r in rows)), f"{round(sum(r.input_tokens for r in rows)):,}",
                  f"{round(sum(r.output_tokens for r in rows)):,}", total_cost))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines)
