"""`gimp-openai doctor`: why does it not work? Each check says what it found, in plain words, and what to do.

An artist who sees "nothing happens" in GIMP cannot read a traceback. Doctor walks the chain the plug-in
depends on, in order: the key (present? where from? never printed), the server (reachable? TLS verified?
does it list image models?), the engine's own libraries, and GIMP's plug-in folders (F's
:mod:`plugin_dirs`). A failed check never stops the others: the report is complete in one run.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from gimp_openai import __version__
from gimp_openai.errors import GimpOpenAIError, TLSError

OK, INFO, WARNING, ERROR = "ok", "info", "warning", "error"


@dataclass
class Check:
    """One finding: ``level`` ok|info|warning|error, ``what`` the subject, ``detail`` what was found."""

    level: str
    what: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def line(self) -> str:
        mark = {OK: "ok  ", INFO: "info", WARNING: "warn", ERROR: "FAIL"}.get(self.level, self.level)
        text = f"[{mark}] {self.what}: {self.detail}"
        return text + (f"\n       -> {self.fix}" if self.fix else "")


def check_versions() -> list[Check]:
    parts = [f"gimp-openai {__version__}", f"Python {platform.python_version()}"]
    checks = []
    for module, name in (("numpy", "numpy"), ("PIL", "Pillow"), ("requests", "requests"), ("cv2", "OpenCV"),
                         ("platformdirs", "platformdirs"), ("keyring", "keyring")):
        try:
            mod = __import__(module)
            parts.append(f"{name} {getattr(mod, '__version__', '?')}")
        except Exception as exc:  # noqa: BLE001 - report, do not crash
            checks.append(Check(ERROR, name, f"cannot be imported ({type(exc).__name__})",
                                "reinstall the engine: ./scripts/setup (or scripts/install)"))
    checks.insert(0, Check(OK if sys.version_info >= (3, 10) else ERROR, "versions", ", ".join(parts),
                           "" if sys.version_info >= (3, 10) else "the engine needs Python 3.10 or newer"))
    return checks


def check_key(settings: Any) -> Check:
    from gimp_openai.settings import is_loopback_url, key_source, resolve_api_key

    source = key_source(settings)
    if resolve_api_key(settings):
        return Check(OK, "API key", f"present (from {source}; not shown)")
    if is_loopback_url(settings.base_url):
        return Check(INFO, "API key", "none set; not needed for the local server at " + settings.base_url)
    return Check(ERROR, "API key", "none set",
                 "set OPENAI_API_KEY, or run `gimp-openai key set` (it reads the key from the keyboard, not argv); "
                 "or use the offline local server: `gimp-openai serve` and OPENAI_BASE_URL=http://127.0.0.1:PORT/v1")


def check_server(settings: Any, client: Any, clock: Callable[[], float] = time.monotonic) -> list[Check]:
    """Reachability, TLS and the model list in one request (GET /models)."""
    url = settings.base_url
    start = clock()
    try:
        entries = client.list_models()
    except TLSError as exc:
        return [Check(ERROR, "TLS", f"the certificate of {url} could not be verified: {exc.message}", exc.hint)]
    except GimpOpenAIError as exc:
        level = ERROR
        what = "server"
        if exc.code in ("invalid_api_key", "missing_key"):
            what = "API key"
        return [Check(level, what, f"{url}: {exc.message}", exc.hint)]
    seconds = clock() - start
    checks = [Check(OK, "server", f"{url} answered in {seconds:.2f} s")]
    if url.startswith("https://"):
        checks.append(Check(OK, "TLS", "certificate verified"))
    elif not _loopback(url):
        checks.append(Check(WARNING, "TLS", f"{url} is plain http: the key travels unencrypted",
                            "use an https:// base URL"))
    from gimp_openai import capabilities

    extra = tuple(getattr(settings, "extra_image_models", []) or [])
    image_ids = [e["id"] for e in entries if capabilities.is_image_model_id(e["id"], extra)]
    if image_ids:
        checks.append(Check(OK, "models", f"{len(image_ids)} image model(s): {', '.join(sorted(image_ids))}"))
    else:
        checks.append(Check(WARNING, "models", f"the server lists {len(entries)} model(s) but no image model",
                            "if your server names its models differently, add them to extra_image_models in "
                            "the settings"))
    return checks


def _loopback(url: str) -> bool:
    from gimp_openai.settings import is_loopback_url

    return is_loopback_url(url)


def check_plugin_dirs() -> list[Check]:
    try:
        from gimp_openai.plugin_dirs import diagnose_plugin_dirs
    except ImportError:
        return [Check(INFO, "GIMP plug-in folders", "not checked (plugin_dirs is not installed)")]
    try:
        findings = diagnose_plugin_dirs()
    except Exception as exc:  # noqa: BLE001
        return [Check(WARNING, "GIMP plug-in folders", f"could not be checked ({type(exc).__name__}: {exc})")]
    return [Check(f.level if f.level in (OK, INFO, WARNING, ERROR) else INFO, f.where, f.message, f.hint)
            for f in findings]


def run(settings: Any, client: Any | None, *, plugin_dirs: bool = True) -> list[Check]:
    """Every check, in dependency order. ``client`` None -> the server checks are skipped (no key, not local)."""
    checks = check_versions()
    checks.append(check_key(settings))
    if client is not None:
        checks.extend(check_server(settings, client))
    else:
        checks.append(Check(INFO, "server", f"{settings.base_url} not contacted (no key to authenticate with)"))
    if plugin_dirs:
        checks.extend(check_plugin_dirs())
    return checks


def worst(checks: list[Check]) -> str:
    order = [OK, INFO, WARNING, ERROR]
    return max((c.level for c in checks), key=lambda lv: order.index(lv) if lv in order else 0, default=OK)
