"""The models the local server lists and serves, with their lifecycle.

The default list has every image model of the current line-up, all live, with ``created`` increasing in
release order (so "newest" is the gpt-image-2 family), plus a few non-image models so clients must filter.
``--models FILE`` replaces the list; ``--shutdown MODEL=YYYY-MM-DD`` sets (or adds) a shutdown date. A model
whose date has passed is still listed, with its date, and any request naming it gets the real API's answer.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from gimp_openai import capabilities
from gimp_openai.server import apierror


def _ts(day: str) -> int:
    return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp())


@dataclass
class ServedModel:
    id: str
    created: int
    owned_by: str = "system"
    shutdown_date: date | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
            "shutdown_date": self.shutdown_date.isoformat() if self.shutdown_date else None,
        }


def default_models() -> list[ServedModel]:
    """Release order matters: clients pick the newest live GPT image model by ``created``."""
    return [
        ServedModel("whisper-1", _ts("2023-02-27"), "openai-internal"),
        ServedModel("dall-e-2", _ts("2023-11-01")),
        ServedModel("gpt-4o", _ts("2024-05-10")),
        ServedModel("text-embedding-3-small", _ts("2024-01-22")),
        ServedModel("gpt-image-1", _ts("2025-04-23")),
        ServedModel("gpt-image-1-mini", _ts("2025-10-06")),
        ServedModel("gpt-image-1.5", _ts("2025-12-16")),
        ServedModel("chatgpt-image-latest", _ts("2025-12-17")),
        ServedModel("gpt-image-2-2026-04-21", _ts("2026-04-21")),
        ServedModel("gpt-image-2", _ts("2026-04-21") + 60),
    ]


def _parse_date(text: str | None, what: str) -> date | None:
    if text in (None, "", "null"):
        return None
    try:
        return date.fromisoformat(str(text))
    except ValueError as exc:
        raise ValueError(f"{what}: {text!r} is not a date (YYYY-MM-DD)") from exc


def load_models_file(path: str | Path) -> list[ServedModel]:
    """A JSON list of model objects (or ``{"data": [...]}``); ``created`` defaults to list order."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    items = raw.get("data") if isinstance(raw, dict) else raw
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of model objects")
    models = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            item = {"id": item}
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise ValueError(f"{path}: entry {index} has no string 'id'")
        models.append(
            ServedModel(
                id=item["id"],
                created=int(item.get("created", _ts("2025-01-01") + index * 86400)),
                owned_by=str(item.get("owned_by", "system")),
                shutdown_date=_parse_date(item.get("shutdown_date"), f"{path}: {item['id']}"),
            )
        )
    return models


def apply_shutdowns(models: list[ServedModel], specs: list[str]) -> list[ServedModel]:
    """``MODEL=YYYY-MM-DD``: set that model's date; a model not in the list is added (e.g. dall-e-3)."""
    by_id = {m.id: m for m in models}
    for spec in specs:
        model_id, sep, day = spec.partition("=")
        if not sep or not model_id:
            raise ValueError(f"--shutdown {spec!r}: write MODEL=YYYY-MM-DD")
        when = _parse_date(day, f"--shutdown {model_id}")
        if model_id in by_id:
            by_id[model_id].shutdown_date = when
        else:
            added = ServedModel(model_id, max((m.created for m in models), default=0) + 1, shutdown_date=when)
            models.append(added)
            by_id[model_id] = added
    return models


class ModelRegistry:
    """Thread-safe lookup of the served models and of what a request naming one should get."""

    def __init__(self, models: list[ServedModel], today: date | None = None) -> None:
        self._models = {m.id: m for m in models}
        self._today = today
        self._lock = threading.Lock()

    def today(self) -> date:
        return self._today or date.today()

    def listing(self) -> dict[str, object]:
        with self._lock:
            data = [m.to_json() for m in self._models.values()]
        return {"object": "list", "data": data}

    def get(self, model_id: str) -> ServedModel | None:
        with self._lock:
            return self._models.get(model_id)

    def is_shut_down(self, model: ServedModel) -> bool:
        return model.shutdown_date is not None and model.shutdown_date <= self.today()

    def require_image_model(self, model_id: str, endpoint: str) -> capabilities.Family:
        """The family serving ``model_id`` at ``endpoint``, or the ApiError the real API would answer."""
        model = self.get(model_id)
        if model is None:
            raise apierror.model_not_found(model_id)
        if self.is_shut_down(model):
            raise apierror.model_shut_down(model_id)
        if not capabilities.is_image_model_id(model_id):
            raise apierror.invalid_value("model", model_id, detail="This model does not support image generation.")
        family = capabilities.family_for(model_id)
        if not capabilities.supports_endpoint(family, endpoint):
            if endpoint == capabilities.ENDPOINT_VARIATIONS:
                raise apierror.ApiError(
                    400, f"Invalid value: '{model_id}'. Value must be 'dall-e-2'.", param="model", code="invalid_value"
                )
            raise apierror.invalid_value(
                "model", model_id, detail=f"The model does not support the /images/{endpoint} endpoint."
            )
        return family
