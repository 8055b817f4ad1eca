"""One session of the engine: settings -> key -> client -> model, built once, whoever asks.

The command line and the host protocol (``jobs``) both need the same chain: the user's settings, the API key
(none for a server on this machine), one client with its history folder and model list, and the model a run
uses when none was named. It lives here once, so both resolve a key or a default model the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from gimp_openai.errors import GimpOpenAIError, MissingKeyError
from gimp_openai.operations import Engine
from gimp_openai.settings import Settings, load_settings, resolve_api_key
from gimp_openai.urlpolicy import is_loopback


def resolve_key(settings: Settings) -> str:
    """The key from environment/keyring/config; none needed for a server on this machine (`gimp-openai serve`)."""
    key = resolve_api_key(settings)
    if key:
        return str(key)
    if is_loopback(str(settings.base_url or "")):
        return ""
    raise MissingKeyError("No OpenAI API key is set.")


def make_engine(settings: Settings) -> Engine:
    return Engine.from_settings(settings, resolve_key(settings))


def resolve_model(engine: Engine, model: str, operation: str) -> str:
    """'' -> the user's saved choice while it is live, else the newest live GPT image model."""
    if model:
        return model
    from gimp_openai import discovery

    saved = engine.settings.default_model or None
    try:
        models = engine.models()
    except GimpOpenAIError:
        if saved:
            return str(saved)
        raise
    return str(discovery.choose_default_model(models, saved, operation))


class Session:
    """The settings and the one Engine (client, history, model list) of a process, built on first use: a GIMP
    run's plan and job, or a CLI batch's items, share them, and the model list is asked for once."""

    def __init__(self, settings: Settings | None = None, *,
                 engine_factory: Callable[[Settings], Engine] | None = None, engine: Engine | None = None) -> None:
        self.settings = settings if settings is not None else load_settings()
        self._factory = engine_factory or make_engine
        self._engine = engine

    @property
    def built(self) -> Engine | None:
        """The engine if it was built already (without building it)."""
        return self._engine

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._factory(self.settings)
        return self._engine

    def model(self, requested: str, operation: str) -> str:
        """The model to use: the one asked for as it is (no key or server needed for that), else the
        default chosen from the server's list."""
        return requested or resolve_model(self.engine(), requested, operation)
