"""Which image models a server offers today, and what to use when one goes away.

Why: no model id is safe to hard-code (dall-e-2/3 and the gpt-image-1 family were shut down during 2026).
``GET /models`` lists what a key can use, each with an optional ``shutdown_date``; this module keeps the image
models, caches the list per base URL (so the plug-in still opens offline, saying how old the list is), sorts
them into live / retiring / shut down, picks the default, and turns a ``model_not_found`` into one sentence
naming the replacement.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import capabilities as caps
from . import errors as E
from .settings import Settings, cache_dir, load_settings, save_settings

log = logging.getLogger(__name__)

CACHE_MAX_AGE = 24 * 3600.0
RETIRING_WITHIN_DAYS = 30
LIVE, RETIRING, SHUT_DOWN = "live", "retiring", "shut_down"

#: Shutdowns OpenAI announced (deprecations page, checked 2026-11-25). Used only to word the message for a
#: model the server no longer lists; the server's own ``shutdown_date`` always wins.
KNOWN_SHUTDOWNS: dict[str, dt.date] = {
    "dall-e-2": dt.date(2026, 5, 12),
    "dall-e-3": dt.date(2026, 5, 12),
    "gpt-image-1": dt.date(2026, 10, 23),
    "gpt-image-1-mini": dt.date(2026, 12, 1),
    "gpt-image-1.5": dt.date(2026, 12, 1),
    "chatgpt-image-latest": dt.date(2026, 12, 1),
}

#: Errors after which the cached list is served instead (the server could not be reached or answer).
_OFFLINE_ERRORS = (E.ConnectionFailedError, E.RequestTimeoutError, E.ServerError, E.RateLimitError,
                   E.MalformedResponseError)


class ModelLister(Protocol):
    def list_models(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ModelInfo:
    id: str
    family: str
    created: int | None = None
    shutdown_date: dt.date | None = None
    status: str = LIVE  # live | retiring | shut_down

    @property
    def offered(self) -> bool:
        return self.status != SHUT_DOWN

    @property
    def is_gpt(self) -> bool:
        return caps.FAMILIES[self.family].gpt_params

    def serves(self, endpoint: str) -> bool:
        return endpoint in caps.FAMILIES[self.family].endpoints

    def label(self) -> str:
        """"gpt-image-1.5 (shuts down 2026-12-01)" for menus."""
        if self.status == RETIRING and self.shutdown_date:
            return f"{self.id} (shuts down {self.shutdown_date.isoformat()})"
        if self.status == SHUT_DOWN and self.shutdown_date:
            return f"{self.id} (shut down {self.shutdown_date.isoformat()})"
        return self.id


@dataclass
class ModelList:
    base_url: str
    models: list[ModelInfo]
    fetched_at: float  # epoch seconds of the server answer the list comes from
    from_cache: bool = False
    note: str = ""  # e.g. "Offline: model list from 3 hours ago." (shown to the user when set)
    listed: bool = True  # False when the server has no /models and the list was built from settings

    @property
    def offered(self) -> list[ModelInfo]:
        return [m for m in self.models if m.offered]

    def get(self, model_id: str) -> ModelInfo | None:
        return next((m for m in self.models if m.id == model_id), None)

    def age_seconds(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.fetched_at)


# --- building the list ------------------------------------------------------------------------------------


def _parse_date(value: Any) -> dt.date | None:
    if isinstance(value, str) and value.strip():
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    if isinstance(value, (int, float)) and value > 0:  # some servers give epoch seconds
        return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc).date()
    return None


def status_for(shutdown: dt.date | None, today: dt.date) -> str:
    if shutdown is None:
        return LIVE
    if shutdown <= today:
        return SHUT_DOWN
    if (shutdown - today).days <= RETIRING_WITHIN_DAYS:
        return RETIRING
    return LIVE


def model_infos(entries: Iterable[dict[str, Any]], settings: Settings, today: dt.date) -> list[ModelInfo]:
    """Image models among raw ``/models`` entries, with family and lifecycle status."""
    extra = tuple(settings.extra_image_models) + tuple(settings.model_rules)
    infos = []
    for entry in entries:
        model_id = entry.get("id")
        if not isinstance(model_id, str) or not caps.is_image_model_id(model_id, extra):
            continue
        created = entry.get("created")
        shutdown = _parse_date(entry.get("shutdown_date"))
        infos.append(ModelInfo(
            id=model_id,
            family=caps.family_for(model_id, settings.model_rules).name,
            created=int(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else None,
            shutdown_date=shutdown,
            status=status_for(shutdown, today),
        ))
    infos.sort(key=lambda m: (-(m.created or 0), m.id))
    return infos


def _cache_file(base_url: str) -> Path:
    digest = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:16]
    return cache_dir() / f"models-{digest}.json"


def _read_cache(base_url: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_cache_file(base_url).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or data.get("stale") is None:
        return None
    return data


def _write_cache(base_url: str, entries: list[dict[str, Any]], fetched_at: float) -> None:
    path = _cache_file(base_url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".models-", dir=str(path.parent))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"base_url": base_url, "fetched_at": fetched_at, "stale": False, "models": entries}, handle)
        os.replace(tmp, path)
    except OSError as exc:  # a cache that cannot be written only costs a refetch
        log.warning("Cannot write the model cache %s: %s", path, exc)


def invalidate_cache(base_url: str) -> None:
    """Mark the cached list stale (after a model_not_found): the next listing asks the server again."""
    data = _read_cache(base_url)
    if data is not None:
        data["stale"] = True
        try:
            _cache_file(base_url).write_text(json.dumps(data), encoding="utf-8")
        except OSError:
            pass


# --- parameters a server refused -----------------------------------------------------------------------------


def _refusals_file(base_url: str) -> Path:
    digest = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:16]
    return cache_dir() / f"refused-params-{digest}.json"


def _read_refusals(base_url: str) -> dict[str, list[str]]:
    try:
        data = json.loads(_refusals_file(base_url).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        return {}
    return {str(m): [str(p) for p in v if isinstance(p, str)] for m, v in models.items() if isinstance(v, list)}


def refused_params(base_url: str, model: str) -> set[str]:
    """The optional parameters this server refused for ``model`` as unknown: the client leaves them out, so a
    compatible server that never heard of ``complexity`` costs one refused request, not one per run."""
    return {p for p in _read_refusals(base_url).get(model, []) if p in caps.OPTIONAL_PARAMS}


def remember_refused_param(base_url: str, model: str, param: str) -> None:
    """Note that ``base_url`` refused ``param`` for ``model`` (a cache file per base URL; losing it costs one
    more refused request)."""
    data = _read_refusals(base_url)
    data[model] = sorted({*data.get(model, []), param})
    path = _refusals_file(base_url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".refused-", dir=str(path.parent))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"base_url": base_url, "models": data}, handle)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("Cannot write %s: %s", path, exc)


def describe_age(seconds: float) -> str:
    if seconds < 90:
        return "just now"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} minutes ago"
    hours = minutes / 60
    if hours < 48:
        return f"{hours:.0f} hours ago"
    return f"{hours / 24:.0f} days ago"


def list_image_models(
    client: ModelLister,
    settings: Settings,
    *,
    refresh: bool = False,
    today: dt.date | None = None,
    now: float | None = None,
) -> ModelList:
    """The image models of ``settings.base_url``: from the cache while it is fresh (under a day, not marked
    stale, not ``refresh``), else from the server (and cached). If the server cannot be reached, the cache
    serves with a note saying how old it is. A server without ``/models`` gets a list built from settings."""
    base_url = settings.base_url
    now = time.time() if now is None else now
    today = today or dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).date()
    cached = _read_cache(base_url)
    if cached and not refresh and not cached["stale"] and now - float(cached["fetched_at"]) < CACHE_MAX_AGE:
        return ModelList(base_url, model_infos(cached["models"], settings, today), float(cached["fetched_at"]),
                         from_cache=True)
    try:
        entries = client.list_models()
    except E.EndpointNotFoundError:
        ids = [i for i in [settings.default_model, *settings.extra_image_models, *settings.model_rules] if i]
        infos = model_infos(({"id": i} for i in dict.fromkeys(ids)), settings, today)
        return ModelList(base_url, infos, now, note="This server does not list its models (no /models).",
                         listed=False)
    except _OFFLINE_ERRORS as exc:
        if cached is None:
            raise
        fetched = float(cached["fetched_at"])
        note = (f"Could not reach {base_url} ({exc.code}); showing the model list from "
                f"{describe_age(now - fetched)}.")
        return ModelList(base_url, model_infos(cached["models"], settings, today), fetched, from_cache=True,
                         note=note)
    image_entries = [e for e in entries if caps.is_image_model_id(
        str(e.get("id")), tuple(settings.extra_image_models) + tuple(settings.model_rules))]
    _write_cache(base_url, image_entries, now)
    return ModelList(base_url, model_infos(image_entries, settings, today), now)


# --- choosing ---------------------------------------------------------------------------------------------

_OPERATION_ENDPOINTS = {
    "edit": (caps.ENDPOINT_EDITS,),
    "generate": (caps.ENDPOINT_GENERATIONS,),
    # variations: the variations endpoint where the model serves it, else an edit with a variation prompt
    "variation": (caps.ENDPOINT_VARIATIONS, caps.ENDPOINT_EDITS),
}


def _models_of(models: ModelList | Sequence[ModelInfo]) -> list[ModelInfo]:
    return list(models.models if isinstance(models, ModelList) else models)


_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _newest(candidates: Iterable[ModelInfo]) -> ModelInfo | None:
    """Newest by ``created``; on a tie the alias beats its dated snapshot (``gpt-image-2`` over
    ``gpt-image-2-2026-04-21``: the alias follows OpenAI's updates), then the highest id (2.5 over 2)."""
    ordered = sorted(candidates, key=lambda m: (m.created or 0, not _DATED.search(m.id), m.id), reverse=True)
    live = [m for m in ordered if m.status == LIVE]
    pool = live or ordered
    return pool[0] if pool else None


def _serves(model: ModelInfo, operation: str) -> bool:
    return any(model.serves(endpoint) for endpoint in _OPERATION_ENDPOINTS.get(operation, (caps.ENDPOINT_EDITS,)))


def choose_default_model(models: ModelList | Sequence[ModelInfo], saved: str | None, operation: str = "edit") -> str:
    """The saved choice while it is offered (and can do ``operation``), else the newest live GPT image model.

    A saved model the server does not list is kept only when the server does not list models at all.
    Raises ModelNotFoundError when nothing usable is offered.
    """
    infos = _models_of(models)
    listed = models.listed if isinstance(models, ModelList) else True
    if saved:
        info = next((m for m in infos if m.id == saved), None)
        if info is not None and info.offered and _serves(info, operation):
            return saved
        if info is None and (not listed or not infos):
            return saved
    best = _newest(m for m in infos if m.offered and m.is_gpt and _serves(m, operation))
    best = best or _newest(m for m in infos if m.offered and _serves(m, operation))
    if best is None:
        raise E.ModelNotFoundError(
            f"This server offers no image model that can {operation}",
            model=saved or "",
            hint="Check the base URL, or name the server's models in Settings (extra image models).",
        )
    return best.id


def replacement_for(model_id: str, models: ModelList | Sequence[ModelInfo]) -> str | None:
    """The newest live model of the same family, else the newest live GPT image model, else None.

    A model that is itself retiring is named only when nothing with a future is left: sending the artist from
    one dying model to another would break their plug-in again within days.
    """
    infos = [m for m in _models_of(models) if m.offered and m.id != model_id]
    family = caps.family_for(model_id).name
    same = _newest(m for m in infos if m.family == family)
    if same is not None and same.status == LIVE:
        return same.id
    fallback = (
        _newest(m for m in infos if m.is_gpt and m.status == LIVE)
        or _newest(m for m in infos if m.is_gpt)
        or same
    )
    return fallback.id if fallback is not None else None


def explain_model_not_found(
    error: E.ModelNotFoundError,
    models: ModelList | Sequence[ModelInfo],
    *,
    model: str | None = None,
    today: dt.date | None = None,
) -> E.ModelNotFoundError:
    """One sentence naming the model, why it is gone, and the live replacement (filled in ``replacement``)."""
    model_id = model or error.model
    today = today or dt.date.today()
    info = next((m for m in _models_of(models) if m.id == model_id), None)
    shutdown = info.shutdown_date if info and info.shutdown_date else KNOWN_SHUTDOWNS.get(model_id)
    if shutdown and shutdown <= today:
        why = f"was shut down on {shutdown.isoformat()}"
    else:
        why = "is not available on this server"
    replacement = replacement_for(model_id, models)
    message = f"The model `{model_id}` {why}."
    if replacement:
        message += f" Use `{replacement}` instead."
        # the artist's field is a text field that offers the listed models, not a fixed list to choose from
        hint = (f"Type {replacement} in the Model field (it offers the models this server lists), or leave "
                f"the field empty for the newest live model; on the command line: --model {replacement}.")
    else:
        hint = ("Run Settings with 'Test connection' on (or `gimp-openai models --refresh`) to refresh the models "
                "the Model field offers, then pick one of them.")
    new = E.ModelNotFoundError(
        message, model=model_id, replacement=replacement, hint=hint, status=error.status,
        request_id=error.request_id, param=error.param, server_code=error.server_code, saved=error.saved,
    )
    new.retries = error.retries
    return new


def handle_model_not_found(
    error: E.ModelNotFoundError, client: ModelLister, settings: Settings, *, today: dt.date | None = None
) -> E.ModelNotFoundError:
    """After a model_not_found: drop the cached list, fetch a fresh one (or fall back to the cache), and
    return the explained error. Never raises for a listing problem: the original error stays the story."""
    invalidate_cache(settings.base_url)
    try:
        models: ModelList | list[ModelInfo] = list_image_models(client, settings, refresh=True, today=today)
    except E.GimpOpenAIError:
        models = []
    return explain_model_not_found(error, models, today=today)


# --- remembered rules and the CLI listing -----------------------------------------------------------------


def remember_size_rule(model_id: str, family_name: str, settings: Settings | None = None) -> Settings:
    """Persist "``model_id`` follows ``family_name``'s sizes" (after a 400 on size and a successful retry at a
    standard size) in settings.model_rules, so the next request is right the first time."""
    if family_name not in caps.FAMILIES:
        raise E.InvalidInputError(f"{family_name!r} is not a model family ({', '.join(caps.FAMILIES)})")
    current = load_settings(apply_env=False)
    current.model_rules[model_id] = family_name
    save_settings(current)
    if settings is not None:
        settings.model_rules[model_id] = family_name
        return settings
    return current


#: How long "this server refuses ``stream``" is believed: a compatible server may learn to stream.
STREAM_REFUSAL_MAX_AGE = 30 * 24 * 3600.0


def _server_facts_file(base_url: str) -> Path:
    digest = hashlib.sha256(base_url.rstrip("/").encode()).hexdigest()[:16]
    return cache_dir() / f"server-{digest}.json"


def streaming_refused(base_url: str, now: float | None = None) -> bool:
    """Did the server at ``base_url`` refuse ``stream`` (within STREAM_REFUSAL_MAX_AGE)? Then requests to it go
    without streaming at once, instead of being refused and sent again every time."""
    try:
        data = json.loads(_server_facts_file(base_url).read_text(encoding="utf-8"))
        since = float(data["stream_refused_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (time.time() if now is None else now) - since < STREAM_REFUSAL_MAX_AGE


def remember_streaming_refused(base_url: str, now: float | None = None) -> None:
    """Note, per base URL (beside the model cache), that its server refused ``stream``; the size rule is
    remembered per model in the settings, this per server, since streaming is the server's feature."""
    path = _server_facts_file(base_url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".server-", dir=str(path.parent))
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"base_url": base_url, "stream_refused_at": time.time() if now is None else now}, handle)
        os.replace(tmp, path)
    except OSError as exc:  # not remembering costs one refused request next time
        log.warning("Cannot remember that %s refuses streaming: %s", base_url, exc)


def sizes_text(family_name: str) -> str:
    family = caps.FAMILIES[family_name]
    if family.free_sizes is not None:
        rule = family.free_sizes
        text = (f"any WxH (multiples of {rule.multiple}, long side ≤ {rule.max_edge}, "
                f"aspect ≤ {rule.max_aspect:g}:1)")
    else:
        text = ", ".join(family.sizes)
    return text + (", auto" if family.allows_auto_size else "")


def status_text(model: ModelInfo) -> str:
    if model.status == SHUT_DOWN:
        return f"shut down {model.shutdown_date.isoformat() if model.shutdown_date else ''}".strip()
    if model.status == RETIRING and model.shutdown_date:
        return f"retiring {model.shutdown_date.isoformat()}"
    return "live"


def format_models(models: ModelList, *, include_shut_down: bool = False, now: float | None = None) -> str:
    """The table `gimp-openai models` prints: id, family, sizes, status (with the shutdown date)."""
    rows = [(m.id, m.family, sizes_text(m.family), status_text(m))
            for m in models.models if include_shut_down or m.offered]
    header = ("MODEL", "FAMILY", "SIZES", "STATUS")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = ["  ".join([*(r[i].ljust(widths[i]) for i in range(3)), r[3]]).rstrip() for r in [header, *rows]]
    if not rows:
        lines.append("(no image models offered)")
    if models.note:
        lines.append(models.note)
    elif models.from_cache:
        lines.append(f"(cached list from {describe_age(models.age_seconds(now))})")
    return "\n".join(lines)


def models_report(models: ModelList, *, now: float | None = None) -> dict[str, Any]:
    return {
        "base_url": models.base_url,
        "from_cache": models.from_cache,
        "age_seconds": round(models.age_seconds(now), 1),
        "note": models.note,
        "models": [
            {"id": m.id, "family": m.family, "created": m.created, "sizes": sizes_text(m.family),
             "shutdown_date": m.shutdown_date.isoformat() if m.shutdown_date else None, "status": m.status,
             "offered": m.offered}
            for m in models.models
        ],
    }
