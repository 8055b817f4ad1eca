"""User settings, folders and the API key.

Why a module of its own: the key has three possible homes (environment, OS keyring, a 0600 config file) and
every entry point (CLI, job runner, GIMP hosts, doctor) must resolve it the same way, in the same order,
without ever writing it anywhere else. Folders follow platformdirs so the plug-in behaves like a good citizen
on Linux, macOS and Windows; the ``GIMP_OPENAI_*_DIR`` variables override them (tests use them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import SettingsError, redact
from .urlpolicy import is_loopback as is_loopback_url  # noqa: F401 - the engine's one loopback test, re-exported

log = logging.getLogger(__name__)

APP_NAME = "gimp-openai"
KEYRING_SERVICE = "gimp-openai"
KEYRING_USER = "api_key"
CONFIG_FILE = "config.json"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_VARIATION_PROMPT = (
    "Make a variation of this image: keep the subject, the composition, the colours and the style exactly as "
    "they are, and vary only small details."
)

#: Environment variables that override a setting for this run (never written back to the file).
ENV_OVERRIDES: dict[str, str] = {
    "OPENAI_BASE_URL": "base_url",
    "OPENAI_ORG_ID": "organization",
    "OPENAI_PROJECT_ID": "project",
    "OPENAI_API_VERSION": "azure_api_version",
    "GIMP_OPENAI_MODEL": "default_model",
}


@dataclass
class Settings:
    """Everything the user can set. Defaults are what a fresh install uses."""

    base_url: str = DEFAULT_BASE_URL
    default_model: str = ""  # "" = the newest live GPT image model (discovery decides)
    history_dir: str = ""  # "" = platform default (or GIMP_OPENAI_HISTORY_DIR)
    read_timeout: float = 600.0  # gpt-image-2 at high quality can take ~5 minutes
    connect_timeout: float = 10.0
    max_retries: int = 2
    concurrency: int = 4
    model_rules: dict[str, str] = field(default_factory=dict)  # model id -> family name
    extra_image_models: list[str] = field(default_factory=list)  # ids a compatible server names differently
    organization: str = ""
    project: str = ""
    azure_api_version: str = ""  # set (with an Azure endpoint as base_url) to talk to Azure OpenAI
    azure_deployment: str = ""  # "" = the model id names the deployment
    variation_prompt: str = DEFAULT_VARIATION_PROMPT
    #: Send the key over plain http to a host that is not this computer (cleartext on the network). Off.
    allow_insecure_http: bool = False
    #: Dollars above which the command line asks before sending (refuses without --yes when it cannot ask).
    max_cost: float = 1.0
    #: model id or family -> {text_input, image_input, image_output[, text_output][, as_of]} in dollars per 1M
    #: tokens; replaces the engine's price table for that model (pricing.py)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Which fields came from the environment for this run (not saved, not part of the file).
    env_overridden: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @property
    def is_azure(self) -> bool:
        return bool(self.azure_api_version or self.azure_deployment)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("env_overridden", None)
        return data


_FIELD_TYPES = {f.name: f for f in dataclasses.fields(Settings) if f.name != "env_overridden"}


# --- folders ----------------------------------------------------------------------------------------------


def _env_dir(var: str) -> Path | None:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    """Where config.json lives: ``GIMP_OPENAI_CONFIG_DIR``, else the platform's user config folder."""
    override = _env_dir("GIMP_OPENAI_CONFIG_DIR")
    if override:
        return override
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Disposable data (the model list cache): ``GIMP_OPENAI_CACHE_DIR``, else the user cache folder."""
    override = _env_dir("GIMP_OPENAI_CACHE_DIR")
    if override:
        return override
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def history_dir(settings: Settings | None = None) -> Path:
    """Where every paid image is kept: ``GIMP_OPENAI_HISTORY_DIR``, else the setting, else user data/history."""
    override = _env_dir("GIMP_OPENAI_HISTORY_DIR")
    if override:
        return override
    if settings is not None and settings.history_dir.strip():
        return Path(settings.history_dir).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "history"


def config_path() -> Path:
    return config_dir() / CONFIG_FILE


# --- the config file --------------------------------------------------------------------------------------


def _read_config_file() -> dict[str, Any]:
    """The raw JSON object of config.json ({} when absent). Repairs a mode looser than 0600, with a warning."""
    path = config_path()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return {}
    if os.name == "posix" and mode & 0o077:
        log.warning("%s was readable by other users (mode %o); setting it to 0600", path, mode)
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        # Never echo the file content: it may hold the key.
        raise SettingsError(f"Cannot read the settings file {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"The settings file {path} does not hold a JSON object")
    return data


def _write_config_file(data: dict[str, Any]) -> Path:
    """Write config.json atomically, created 0600 from the first byte (never world-readable, even briefly)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=str(path.parent))  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _coerce(name: str, value: Any) -> Any:
    """Bring a JSON value to the field's type; a wrong type or a number outside the bounds table (NaN and
    infinity included) falls back to the default."""
    from . import bounds

    result = _coerce_type(name, value)
    if name in bounds.BOUNDS and not bounds.is_within(name, result):
        log.warning("Setting %s=%r is out of range (%s); using the default", name, result,
                    bounds.BOUNDS[name].allowed())
        return getattr(Settings(), name)
    return result


def _coerce_type(name: str, value: Any) -> Any:
    default = Settings()
    current = getattr(default, name)
    if name == "prices":  # rows of numbers, checked one by one (a bad row is left out, the table's price stays)
        from .pricing import coerce_overrides

        return coerce_overrides(value)
    try:
        if isinstance(current, bool):
            return _coerce_bool(value, current)
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, str):
            return "" if value is None else str(value)
        if isinstance(current, dict):
            return {str(k): str(v) for k, v in dict(value).items()}
        if isinstance(current, list):
            return [str(v) for v in value]
    except (TypeError, ValueError):
        log.warning("Setting %s has an unusable value; using the default", name)
    return current


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def _coerce_bool(value: Any, default: bool) -> bool:
    """A yes/no setting from JSON or `config set` text: ``bool("false")`` is True, so words are read as words;
    anything unclear keeps the default (for allow_insecure_http: off)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    log.warning("A yes/no setting has the value %r; using the default", value)
    return default


def check_base_url(url: str) -> str:
    """A usable base URL without credentials in it, trailing slash removed. SettingsError otherwise."""
    url = (url or "").strip()
    if not url:
        return DEFAULT_BASE_URL
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port over 65535 or not a number raises here, not later inside the HTTP client
    except ValueError as exc:
        raise SettingsError(
            f"The base URL {redact(url)!r} is not a valid URL ({exc})",
            hint="Example: https://api.openai.com/v1 or http://[::1]:8000/v1",
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"The base URL {redact(url)!r} is not an http(s) URL", hint="Example: https://api.openai.com/v1"
        )
    if parts.username or parts.password:
        raise SettingsError(
            "The base URL must not contain a user name or password; store the key with `gimp-openai key set`."
        )
    for key, value in parse_qsl(parts.query):
        if "key" in key.lower() or redact(value) != value:
            raise SettingsError("The base URL must not contain an API key; store the key with `gimp-openai key set`.")
    if parts.fragment:
        raise SettingsError("The base URL must not contain a #fragment")
    return url.rstrip("/")


def load_settings(*, apply_env: bool = True) -> Settings:
    """Settings from config.json (defaults for what is missing), then environment overrides for this run."""
    raw = _read_config_file()
    values = {name: _coerce(name, raw[name]) for name in _FIELD_TYPES if name in raw}
    settings = Settings(**values)
    overridden: set[str] = set()
    if apply_env:
        for var, name in ENV_OVERRIDES.items():
            value = os.environ.get(var, "").strip()
            if value:
                setattr(settings, name, value)
                overridden.add(name)
    settings.base_url = check_base_url(settings.base_url)
    settings.env_overridden = frozenset(overridden)
    return settings


def save_settings(settings: Settings) -> Path:
    """Write the settings (keeping a key stored in the file); values that came from the environment are not
    persisted, so running once with OPENAI_BASE_URL does not change the user's saved choice."""
    check_base_url(settings.base_url)
    raw = _read_config_file()
    for name, value in settings.to_dict().items():
        if name in settings.env_overridden:
            continue
        raw[name] = value
    return _write_config_file(raw)


def update_settings(**changes: Any) -> Settings:
    """Load the file's settings (no environment), apply ``changes``, save, and return them."""
    settings = load_settings(apply_env=False)
    for name, value in changes.items():
        if name not in _FIELD_TYPES:
            raise SettingsError(f"There is no setting called {name!r}")
        setattr(settings, name, _coerce(name, value))
    save_settings(settings)
    return settings


# --- the API key ------------------------------------------------------------------------------------------


def _usable_keyring() -> Any | None:
    """The keyring backend if it can really store secrets, else None (fail/null backends, import errors)."""
    try:
        import keyring
        from keyring.backends import fail, null

        backend = keyring.get_keyring()
        if isinstance(backend, (fail.Keyring, null.Keyring)):
            return None
        if getattr(backend, "backends", None) == []:  # a chainer with nothing behind it
            return None
        priority = getattr(type(backend), "priority", 1)
        if isinstance(priority, (int, float)) and priority <= 0:
            return None
        return backend
    except Exception:  # noqa: BLE001 - any keyring problem means "no keyring", quietly
        return None


def _keyring_get() -> str | None:
    backend = _usable_keyring()
    if backend is None:
        return None
    try:
        value = backend.get_password(KEYRING_SERVICE, KEYRING_USER)
    except Exception:  # noqa: BLE001 - locked, no D-Bus, user cancelled: fall through to the file
        log.debug("keyring lookup failed; trying the config file")
        return None
    return value.strip() if isinstance(value, str) and value.strip() else None


def _clean_key(key: str) -> str:
    key = (key or "").strip()
    if not key or any(ch.isspace() for ch in key) or not key.isprintable():
        raise SettingsError("That is not an API key (it is empty or contains spaces or control characters).")
    return key


def resolve_api_key(settings: Settings | None = None) -> str | None:
    """The key for this run: OPENAI_API_KEY, else the OS keyring, else ``api_key`` in the 0600 config file.

    ``settings`` is accepted so callers need not care where keys live; Azure uses AZURE_OPENAI_API_KEY first.
    """
    if settings is not None and settings.is_azure:
        azure = os.environ.get("AZURE_OPENAI_API_KEY", "").strip()
        if azure:
            return azure
    env = os.environ.get("OPENAI_API_KEY", "").strip()
    if env:
        return env
    from_keyring = _keyring_get()
    if from_keyring:
        return from_keyring
    try:
        raw = _read_config_file()
    except SettingsError:
        return None
    value = raw.get("api_key")
    return value.strip() if isinstance(value, str) and value.strip() else None


def key_source(settings: Settings | None = None) -> str:
    """Where :func:`resolve_api_key` finds the key ("environment", "keyring", "config file", "none"); for doctor."""
    if settings is not None and settings.is_azure and os.environ.get("AZURE_OPENAI_API_KEY", "").strip():
        return "environment (AZURE_OPENAI_API_KEY)"
    if os.environ.get("OPENAI_API_KEY", "").strip():
        return "environment (OPENAI_API_KEY)"
    if _keyring_get():
        return "keyring"
    try:
        return "config file" if _read_config_file().get("api_key") else "none"
    except SettingsError:
        return "none"


def store_api_key(key: str) -> str:
    """Store the key in the OS keyring if a real one is available, else in config.json (0600).

    Returns "keyring" or the config file's path, for a message like "Key stored in ...". A key stored in the
    keyring is removed from the file so only one copy exists.
    """
    key = _clean_key(key)
    backend = _usable_keyring()
    if backend is not None:
        try:
            backend.set_password(KEYRING_SERVICE, KEYRING_USER, key)
        except Exception:  # noqa: BLE001 - fall back to the file
            log.info("The system keyring refused the key; storing it in the 0600 config file instead")
        else:
            raw = _read_config_file()
            if "api_key" in raw:
                raw.pop("api_key")
                _write_config_file(raw)
            return "keyring"
    raw = _read_config_file()
    raw["api_key"] = key
    return str(_write_config_file(raw))


