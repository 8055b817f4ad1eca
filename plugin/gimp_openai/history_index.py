"""The history folder read back: list past results, describe one, make its thumbnail, and rebuild the layer it
was, at its place, without paying again.

``history.py`` writes; this module only reads, and reads whatever it finds: the folder is the artist's, and it
holds years of results, sidecars written by older versions, files copied in by hand, an image whose sidecar
could not be written (a full disk), and now and then a truncated or edited JSON file. A sidecar that cannot be
used is skipped with a note naming it (the listing still works); an image without a sidecar is listed as
undescribed, because it was paid for all the same.

Listing is quick for thousands of entries: file names start with their UTC time, so the newest come first by
name and ``limit`` and ``since`` stop the walk before the older sidecars are even opened. Thumbnails are made
once and cached (``<cache>/thumbnails``), keyed by the image's path, size and modification time.

An entry's id is its file name without the extension: plain ASCII (``history.slugify``), checked here again
before any path is built from it, so an id from a script or a host can never name a file outside the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError, UnreadableImageError, redact
from .history import MASK_SUFFIX

#: Ids the history writes: ``<YYYYmmdd-HHMMSS-mmm>-<slug>[-KofN][-partialK][-k]``; nothing else is trusted.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,199}")
_STAMP = re.compile(r"(\d{8})-(\d{6})-(\d{3})-")
IMAGE_EXTS = ("png", "webp", "jpeg", "jpg")
#: A sidecar is a few hundred bytes; one much larger is not ours and is not read into memory.
MAX_SIDECAR_BYTES = 256 * 1024
THUMB_SIZE = 160


@dataclass
class Entry:
    """One past result as its sidecar describes it (``described`` False: an image without a sidecar)."""

    id: str
    image: Path
    time: str = ""
    prompt: str = ""
    model: str = ""
    operation: str = ""
    size: str = ""
    quality: str = ""
    source: str = ""
    item: str = ""
    request_id: str = ""
    k: int | None = None
    n: int | None = None
    place: dict[str, int] | None = None
    request: dict[str, int] | None = None
    partial: bool = False
    rescued_from: str = ""
    cost: float | None = None
    usage: dict[str, Any] | None = None
    described: bool = True
    thumbnail: Path | None = None
    #: the layer mask the run gave it (``history.save_mask``), when the sidecar names one that is there
    mask: Path | None = None
    #: the alignment and tone corrections the run put into it (``seamless.replay``), when recorded
    replay: dict[str, Any] | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "image": str(self.image), "time": self.time, "prompt": self.prompt, "model": self.model,
            "operation": self.operation, "size": self.size, "quality": self.quality, "source": self.source,
            "item": self.item, "request_id": self.request_id, "k": self.k, "n": self.n, "place": self.place,
            "request": self.request, "partial": self.partial, "described": self.described,
        }
        if self.rescued_from:
            out["rescued_from"] = self.rescued_from
        if self.cost is not None:
            out["cost"] = self.cost
        if self.usage is not None:
            out["usage"] = self.usage
        if self.thumbnail is not None:
            out["thumbnail"] = str(self.thumbnail)
        if self.mask is not None:
            out["mask"] = str(self.mask)
        return out

    @property
    def what(self) -> str:
        """Where it was made, in words: ``photo.xcf, 300×200 at 40,60`` (or ``generated, 1024x1024``)."""
        if self.place:
            region = f"{self.place['width']}\u00d7{self.place['height']} at {self.place['x']},{self.place['y']}"
            return f"{self.source or 'an image'}, {region}"
        if self.operation == "generate":
            return f"generated, {self.size}" if self.size else "generated"
        return self.source or ""


@dataclass
class Listing:
    entries: list[Entry]
    #: one plain sentence per file that could not be used ("skipped X: not JSON")
    notes: list[str]
    folder: Path
    #: entries that exist beyond ``limit`` (so a caller can say "showing 200 of 5,000")
    more: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "folder": str(self.folder), "count": len(self.entries), "more": self.more,
                "entries": [e.to_dict() for e in self.entries], "notes": list(self.notes)}


# --- reading ------------------------------------------------------------------------------------------------

def check_id(entry_id: str) -> str:
    """The id, or InvalidInputError: ids name files, so only the characters history writes are accepted."""
    entry_id = (entry_id or "").strip()
    for ext in (".json", *(f".{e}" for e in IMAGE_EXTS)):  # a file name pasted from the folder works too
        if entry_id.lower().endswith(ext):
            entry_id = entry_id[: -len(ext)]
    if not _ID.fullmatch(entry_id):
        raise InvalidInputError(f"{redact(entry_id)[:80]!r} is not a history id.",
                                hint="Use an id from `gimp-openai history list`.")
    return entry_id


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d``, ``12h``, ``30m`` (that long ago), or a date / ISO time (UTC unless it says otherwise)."""
    now = now or datetime.now(timezone.utc)
    text = (text or "").strip()
    match = re.fullmatch(r"(\d{1,6})\s*([dhmw])", text.lower())
    if match:
        count, unit = int(match.group(1)), match.group(2)
        return now - timedelta(**{{"d": "days", "h": "hours", "m": "minutes", "w": "weeks"}[unit]: count})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInputError(f"--since {text!r} is not a date or a duration.",
                                hint="Use e.g. 2026-03-01, 2026-03-01T14:00, 7d, 12h or 30m.") from exc
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _stamp_of(name: str) -> str | None:
    """``YYYYmmddHHMMSSmmm`` from a history file name, or None for a name history did not write."""
    match = _STAMP.match(name)
    return "".join(match.groups()) if match else None


def _since_stamp(since: datetime) -> str:
    utc = since.astimezone(timezone.utc)
    return utc.strftime("%Y%m%d%H%M%S") + f"{utc.microsecond // 1000:03d}"


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rect_or_none(value: Any) -> dict[str, int] | None:
    if isinstance(value, dict) and all(isinstance(value.get(k), int) and not isinstance(value.get(k), bool)
                                       for k in ("x", "y", "width", "height")):
        if value["width"] > 0 and value["height"] > 0:
            return {k: int(value[k]) for k in ("x", "y", "width", "height")}
    return None


def _text(value: Any, limit: int = 4000) -> str:
    return redact(value)[:limit] if isinstance(value, str) else ""


def _cost(data: dict[str, Any]) -> float | None:
    """The cost in US dollars the sidecar states: this image's share (``cost.usd``, written by the engine from
    the answer's usage at its prices), or a plain number (``cost``, ``usage.cost``) a compatible server gave;
    else None. Nothing is estimated here: an entry without a stated cost shows none."""
    usage: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
    cost = data.get("cost")
    shared = cost.get("usd") if isinstance(cost, dict) else None
    for value in (shared, cost, usage.get("cost"), usage.get("total_cost")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None


def entry_from_sidecar(folder: Path, stem: str, data: Any, present: set[str] | frozenset[str] | None = None) -> Entry:
    """An Entry from a parsed sidecar; ValueError saying why when it cannot describe an image here.
    ``present``: the folder's file names when the caller has listed them (no stat per entry)."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    name = data.get("file")
    if not isinstance(name, str) or not name or os.path.basename(name) != name or name.startswith("."):
        raise ValueError("it names no image file")
    image = folder / name
    if Path(name).stem != stem:
        raise ValueError(f"it describes {name!r}, not {stem!r}")
    if not (name in present if present is not None else image.is_file()):
        raise ValueError(f"its image {name} is missing")
    time = data.get("saved_at") if isinstance(data.get("saved_at"), str) else data.get("time")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    mask = None
    mask_name = stem + MASK_SUFFIX  # the one name history writes: a sidecar cannot point anywhere else
    if data.get("mask") == mask_name and (mask_name in present if present is not None else
                                          (folder / mask_name).is_file()):
        mask = folder / mask_name
    seamless: dict[str, Any] = data["seamless"] if isinstance(data.get("seamless"), dict) else {}
    replay = seamless["replay"] if isinstance(seamless.get("replay"), dict) else None
    return Entry(
        id=stem, image=image, time=_text(time, 64), prompt=_text(data.get("prompt")),
        model=_text(data.get("model"), 200), operation=_text(data.get("operation"), 64),
        size=_text(data.get("size"), 32), quality=_text(data.get("quality"), 32), source=_text(data.get("source"), 400),
        item=_text(data.get("item"), 200), request_id=_text(data.get("request_id"), 200),
        k=_int_or_none(data.get("k")), n=_int_or_none(data.get("n")), place=_rect_or_none(data.get("place")),
        request=_rect_or_none(data.get("request")), partial=data.get("partial") is True,
        rescued_from=_text(data.get("rescued_from"), 400), cost=_cost(data), usage=usage, mask=mask, replay=replay,
        extra={k: v for k, v in data.items() if k in ("revised_prompt", "index", "bytes")},
    )


def _read_sidecar(path: Path) -> Any:
    with open(path, "rb") as handle:
        raw = handle.read(MAX_SIDECAR_BYTES + 1)
    if len(raw) > MAX_SIDECAR_BYTES:
        raise ValueError(f"larger than {MAX_SIDECAR_BYTES // 1024} KB")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("not valid JSON (cut short or edited?)") from exc


def _orphan(folder: Path, stem: str, ext: str) -> Entry:
    """An image whose sidecar is missing (written whole, then the disk filled): listed, since it was paid for."""
    stamp = _stamp_of(stem + "-")
    time = ""
    if stamp:
        time = f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}:{stamp[10:12]}:{stamp[12:14]}+00:00"
    return Entry(id=stem, image=folder / f"{stem}.{ext}", time=time, described=False)


def list_entries(folder: Path | str | None = None, *, since: datetime | None = None,
                 limit: int | None = None) -> Listing:
    """The folder's results, newest first. ``since``: only those saved then or later; ``limit``: at most that
    many (``more`` says how many were left). Never raises for a bad file: it becomes a note."""
    folder = Path(folder) if folder is not None else _history_dir()
    notes: list[str] = []
    try:
        names = [d.name for d in os.scandir(folder) if not d.name.startswith(".")]
    except FileNotFoundError:
        return Listing([], [], folder)
    except OSError as exc:
        return Listing([], [f"The history folder {folder} cannot be read: {exc.strerror or exc}."], folder)
    present = frozenset(names)
    sidecars: set[str] = set()
    images: dict[str, str] = {}
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if not dot or not _ID.fullmatch(stem):
            continue
        ext = ext.lower()
        if ext == "json":
            sidecars.add(stem)
        elif ext in IMAGE_EXTS:
            images.setdefault(stem, ext)
    stems = sorted(sidecars | set(images), key=lambda s: (_stamp_of(s + "-") or "", s), reverse=True)
    floor = _since_stamp(since) if since is not None else None
    entries: list[Entry] = []
    more = 0
    for stem in stems:
        stamp = _stamp_of(stem + "-")
        if floor is not None and stamp is not None and stamp < floor:
            break  # sorted by stamp: everything after this one is older
        if limit is not None and len(entries) >= limit:
            more += 1
            continue
        if stem not in sidecars:
            entries.append(_orphan(folder, stem, images[stem]))
            continue
        try:
            entry = entry_from_sidecar(folder, stem, _read_sidecar(folder / f"{stem}.json"), present)
        except (OSError, ValueError) as exc:
            notes.append(f"Skipped {stem}.json: {getattr(exc, 'strerror', None) or exc}.")
            continue
        if floor is not None and stamp is None and entry.time and _older(entry.time, since):
            continue
        entries.append(entry)
    return Listing(entries, notes, folder, more)


def _older(time: str, since: datetime | None) -> bool:
    try:
        when = datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError:
        return False
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return since is not None and when < since


def get_entry(entry_id: str, folder: Path | str | None = None) -> Entry:
    """One entry by id; InvalidInputError when it is not there or cannot be used (saying why)."""
    folder = Path(folder) if folder is not None else _history_dir()
    stem = check_id(entry_id)
    sidecar = folder / f"{stem}.json"
    if sidecar.is_file():
        try:
            return entry_from_sidecar(folder, stem, _read_sidecar(sidecar))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"The history entry {stem} cannot be used: its sidecar is "
                                    f"{getattr(exc, 'strerror', None) or exc}.",
                                    hint=f"The image itself may still be in {folder}.") from exc
    for ext in IMAGE_EXTS:
        if (folder / f"{stem}.{ext}").is_file():
            return _orphan(folder, stem, ext)
    raise InvalidInputError(f"There is no history entry {stem} in {folder}.",
                            hint="`gimp-openai history list` shows the ids.")


def _history_dir() -> Path:
    from .history import default_history_dir

    return default_history_dir()


# --- thumbnails ---------------------------------------------------------------------------------------------

def thumbnail_dir() -> Path:
    from .settings import cache_dir

    return Path(cache_dir()) / "thumbnails"


def thumbnail(entry: Entry, size: int = THUMB_SIZE, cache: Path | None = None) -> Path:
    """A PNG at most ``size`` pixels on its longer side, made once and cached by path, size and time; the
    image's alpha is kept (a transparent result shows as one)."""
    from PIL import Image

    from . import imaging

    cache = cache or thumbnail_dir()
    info = entry.image.stat()
    key = hashlib.sha256(f"{entry.image.resolve()}|{info.st_size}|{info.st_mtime_ns}|{size}".encode()).hexdigest()
    path = cache / f"{key[:24]}.png"
    if path.is_file():
        return path
    data = entry.image.read_bytes()
    imaging.check_image_bytes(data, what=f"history image {entry.image.name}")  # bombs are refused unread
    pixels = imaging.decode_image(data, what=f"history image {entry.image.name}")
    picture = Image.fromarray(pixels, "RGBA")
    picture.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    from .atomic import write_bytes_atomic

    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_bytes_atomic(path, imaging.encode_png(np.asarray(picture)), durable=False)
    return path


def add_thumbnails(entries: Sequence[Entry], notes: list[str], size: int = THUMB_SIZE, workers: int = 2) -> None:
    """Set ``entry.thumbnail`` for each entry, making the missing ones on ``workers`` threads (decoding
    releases the GIL); an image that cannot be read gets none and a note."""

    def one(entry: Entry) -> tuple[Entry, Path | None, str]:
        try:
            return entry, thumbnail(entry, size), ""
        except Exception as exc:  # noqa: BLE001 - one unreadable image must not empty the list
            return entry, None, f"No thumbnail for {entry.id}: {getattr(exc, 'message', None) or exc}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for entry, path, note in pool.map(one, entries):
            entry.thumbnail = path
            if note:
                notes.append(note)


# --- the layer it was ----------------------------------------------------------------------------------------

@dataclass
class Placed:
    """The entry as a layer: RGBA pixels and where they go (image coordinates); ``placed`` False when the entry
    has no place (a generation, an undescribed image): then x, y are 0 and the caller chooses. ``mask``: the
    layer mask the run gave it (place-sized u8), None for entries kept without one. ``notes``: what differs
    from the layer the run inserted, in words."""

    pixels: np.ndarray
    x: int
    y: int
    placed: bool
    mask: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def fits(self, width: int, height: int) -> bool:
        """Whether it lies wholly inside a canvas of that size (then it goes back at its place)."""
        return (self.placed and self.x >= 0 and self.y >= 0 and self.x + self.width <= width
                and self.y + self.height <= height)

    def masked_pixels(self) -> np.ndarray:
        """The layer as it shows: its alpha times its mask (for a file without layer masks: a PNG, an .ora)."""
        if self.mask is None:
            return self.pixels
        out = self.pixels.copy()
        out[..., 3] = (out[..., 3].astype(np.uint16) * self.mask.astype(np.uint16) + 127) // 255
        return out


def placed_layer(entry: Entry) -> Placed:
    """The layer the run inserted, rebuilt from what history kept: the image as the model returned it, scaled
    and cut to the region it was made for (``place``) exactly as the run cut it, the run's alignment and tone
    corrections put back into it (``seamless.replay``, from the sidecar), and the layer mask the run gave it
    (``<id>.mask.png``). An entry from before masks and corrections were kept comes back without them: the
    whole region as returned, no mask (``notes`` says so)."""
    from . import imaging
    from .composite import result_to_place
    from .geometry import RegionPlan

    try:
        pixels = imaging.read_image(entry.image)
    except OSError as exc:
        raise UnreadableImageError(
            f"The history image {entry.image.name} cannot be read: {exc.strerror or exc}.") from exc
    target = _size(entry.size)
    plan = None
    if entry.place and entry.request and target:
        try:
            plan = RegionPlan.from_dict({"place": entry.place, "request": entry.request, "target": list(target)})
        except InvalidInputError:
            plan = None
    if plan is None:
        return Placed(pixels, 0, 0, False)
    if (pixels.shape[1], pixels.shape[0]) != plan.target:  # as the run did (operations._fit_returned)
        pixels = imaging.resize(pixels, plan.target)
    layer = np.ascontiguousarray(result_to_place(pixels, plan))
    notes: list[str] = []
    if entry.replay is not None:
        from .seamless import replay

        try:
            layer = replay(layer, entry.replay)
        except Exception:  # noqa: BLE001 - a damaged record costs the corrections, never the result
            notes.append("its alignment and tone match could not be put back (their record in history is damaged)")
        else:
            if entry.replay.get("poisson"):
                notes.append("aligned and tone-matched as the run did, but not Poisson-blended (that needs the "
                             "original image)")
    mask = None
    if entry.mask is not None:
        try:
            mask = imaging.read_selection(entry.mask)
        except Exception:  # noqa: BLE001 - a damaged mask costs the mask, never the result
            notes.append(f"its mask {entry.mask.name} could not be read (the file is damaged or missing): "
                         "it comes back without the mask")
        else:
            if mask.shape != layer.shape[:2]:
                notes.append(f"its mask {entry.mask.name} is {mask.shape[1]}x{mask.shape[0]}, not the layer's "
                             f"{layer.shape[1]}x{layer.shape[0]}: left out")
                mask = None
    elif entry.operation == "edit":
        notes.append("history kept no mask for it: the whole region comes back, without the selection's mask")
    return Placed(layer, plan.place.x, plan.place.y, True, mask, notes)


def _size(text: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", text or "")
    if not match:
        return None
    w, h = int(match.group(1)), int(match.group(2))
    return (w, h) if w > 0 and h > 0 else None


def layer_name(entry: Entry) -> str:
    """``OpenAI: <prompt…> (k/n)``, as the run named it; an image without a description says so."""
    prompt = " ".join((entry.prompt or ("variation" if entry.operation.startswith("variation") else "")).split())
    if len(prompt) > 40:
        prompt = prompt[:39].rstrip() + "\u2026"
    prompt = prompt or "(no prompt)"
    tail = f" ({entry.k}/{entry.n})" if entry.k and entry.n else ""
    return f"OpenAI: {prompt}{tail}"


def over(base: np.ndarray, layer: np.ndarray, x: int, y: int) -> np.ndarray:
    """``layer`` composited over a copy of ``base`` at (x, y) (straight alpha, 8-bit), clipped to the canvas."""
    out = base.copy()
    h, w = base.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + layer.shape[1]), min(h, y + layer.shape[0])
    if x0 >= x1 or y0 >= y1:
        return out
    src = layer[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32) / 255.0
    dst = out[y0:y1, x0:x1].astype(np.float32) / 255.0
    sa, da = src[..., 3:4], dst[..., 3:4]
    alpha = sa + da * (1.0 - sa)
    colour = np.where(alpha > 0, (src[..., :3] * sa + dst[..., :3] * da * (1.0 - sa)) / np.maximum(alpha, 1e-6), 0)
    out[y0:y1, x0:x1, :3] = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1, 3:4] = np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out

