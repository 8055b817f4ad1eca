"""One exception class per cause, each carrying the server's message, a hint for the artist and a stable code.

Hosts show ``message`` and ``hint`` in plain words (never a traceback); the job protocol sends
:meth:`GimpOpenAIError.to_dict`. ``saved`` lists files already written (paid results), so an error never
hides what the user has. Messages must never contain the API key: :func:`redact` is applied to every
message built from server or exception text.
"""

from __future__ import annotations

import re
from typing import Any

_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9_\-\.]{8,})")


def redact(text: str, *secrets: str | None) -> str:
    """Remove anything that looks like an API key (and the given secrets) from ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted key]")
    return _KEY_PATTERN.sub("[redacted key]", text)


class GimpOpenAIError(Exception):
    """Base class. ``code`` is stable (tests and hosts switch on it); ``hint`` says what to do."""

    code = "error"
    default_hint = ""
    #: How many times the client retried before giving up (set by the client; 0 = not retried).
    retries = 0
    #: The last preview a streamed request delivered before it failed for good (client.PartialImage), if any:
    #: not a paid result, but the only picture the artist got, so the operation keeps it (marked as partial).
    partial_preview: Any = None

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        param: str | None = None,
        server_code: str | None = None,
        saved: list[str] | None = None,
    ) -> None:
        self.message = redact(message)
        self.hint = hint if hint is not None else self.default_hint
        self.status = status
        self.request_id = request_id
        self.param = param
        self.server_code = server_code
        self.saved: list[str] = list(saved or [])
        super().__init__(self.message)

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text += f" {self.hint}"
        if self.saved:
            text += " Results already saved: " + ", ".join(self.saved)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "status": self.status,
            "request_id": self.request_id,
            "param": self.param,
            "server_code": self.server_code,
            "saved": list(self.saved),
        }


# --- Problems found before any request is sent -------------------------------------------------------------


class InvalidInputError(GimpOpenAIError):
    """The user's input cannot be sent as it is (empty selection, bad size, prompt too long, ...)."""

    code = "invalid_input"


class UnreadableImageError(InvalidInputError):
    code = "unreadable_image"
    default_hint = "Check that the file is a PNG, JPEG or WebP image and is not truncated."


class ImageTooLargeError(InvalidInputError):
    code = "image_too_large"


class MissingKeyError(GimpOpenAIError):
    code = "missing_key"
    default_hint = (
        "Set OPENAI_API_KEY, or store a key with Filters > OpenAI > Settings (or `gimp-openai key set`). "
        "For the offline local server, start `gimp-openai serve` and set the base URL to it."
    )


class OutputNotWritableError(GimpOpenAIError):
    code = "output_not_writable"
    default_hint = "Choose a folder you can write to, or free some disk space."


class CostLimitError(InvalidInputError):
    """Not sent: the estimate is above the user's limit (setting ``max_cost``) and nobody agreed to pay it."""

    code = "cost_limit"
    default_hint = ("Agree to it (--yes), raise the limit (--max-cost, setting max_cost), or ask for fewer or "
                    "smaller images.")


class UnsupportedModelError(InvalidInputError):
    """The model does not serve this operation (e.g. variations with a GPT model on an endpoint)."""

    code = "unsupported_model"


# --- Answers from the server ------------------------------------------------------------------------------


class APIError(GimpOpenAIError):
    code = "api_error"


class AuthenticationError(APIError):
    code = "invalid_api_key"
    default_hint = "The API key was refused. Check it in Settings, or create a new one in your OpenAI account."


class PermissionDeniedError(APIError):
    code = "permission_denied"
    default_hint = (
        "This key may not use this model or endpoint. For GPT image models your organization may need to be "
        "verified; check your OpenAI organization settings."
    )


class QuotaExceededError(APIError):
    code = "insufficient_quota"
    default_hint = "Your OpenAI account has no credit left. Add credit in the billing settings, then try again."


class RateLimitError(APIError):
    code = "rate_limited"
    default_hint = (
        "The server is busy or your rate limit was reached. Wait a minute and try again, or use fewer images."
    )


class ModerationBlockedError(APIError):
    code = "moderation_blocked"
    default_hint = "The request was refused by the safety system. Rephrase the prompt or choose a different region."


class ModelNotFoundError(APIError):
    """The model does not exist or was shut down. Never retried. ``replacement`` names a live model."""

    code = "model_not_found"

    def __init__(self, message: str, *, model: str = "", replacement: str | None = None, **kwargs: Any) -> None:
        self.model = model
        self.replacement = replacement
        super().__init__(message, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(model=self.model, replacement=self.replacement)
        return data


class UnsupportedSizeError(APIError):
    code = "unsupported_size"
    default_hint = "Choose one of the sizes the model takes (size mode 'auto' picks one for you)."


class FileTooLargeError(APIError):
    code = "file_too_large"
    default_hint = "Select a smaller region, or use a model that accepts larger uploads."


class InvalidRequestError(APIError):
    code = "invalid_request"


class ServerError(APIError):
    code = "server_error"
    default_hint = "The server had a problem. It was retried; try again in a few minutes."


class ConnectionFailedError(APIError):
    code = "connection_failed"
    default_hint = "Check your network connection and the base URL in Settings (`gimp-openai doctor` helps)."


class RequestTimeoutError(APIError):
    code = "timeout"
    default_hint = (
        "The server took too long. High quality and large sizes can take several minutes: raise the read "
        "timeout in Settings, or choose a lower quality."
    )


class TLSError(APIError):
    code = "tls_error"
    default_hint = (
        "The server's certificate could not be verified. If you use a corporate proxy or a private server, "
        "point REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) at its CA certificate. Verification cannot be turned off."
    )


class MalformedResponseError(APIError):
    """The answer was damaged or not what the API promises. The default hint says what was kept: the saved
    files by name, or plainly that no image arrived intact (so there is nothing to look for)."""

    code = "malformed_response"
    default_hint = "The server's answer was damaged or not what the API promises."

    def __init__(self, message: str, *, hint: str | None = None, saved: list[str] | None = None,
                 **kwargs: Any) -> None:
        if hint is None:
            hint = self.hint_for(saved or [])
        super().__init__(message, hint=hint, saved=saved, **kwargs)

    @classmethod
    def hint_for(cls, saved: list[str]) -> str:
        if not saved:
            return (f"{cls.default_hint} No image arrived intact, so none could be kept; "
                    "try again (a damaged answer is usually not repeated).")
        names = ", ".join(saved)
        if len(saved) == 1:
            return f"{cls.default_hint} The image that did arrive intact was kept: {names}."
        return f"{cls.default_hint} The {len(saved)} images that did arrive intact were kept: {names}."


# --- Added by the client/settings/discovery modules ---------------------------------------------------------


class UnsafeURLError(APIError):
    """A server returned an image URL the engine will not fetch (plain http to a non-loopback host, too big)."""

    code = "unsafe_url"
    default_hint = (
        "Image URLs are only downloaded over https (or from the local server on this computer). "
        "Ask for base64 results (response_format b64_json) or check the server."
    )


class ResponseTooLargeError(APIError):
    code = "response_too_large"
    default_hint = "The server sent more data than the engine accepts for one answer; ask for fewer images."


class EndpointNotFoundError(APIError):
    """404 that does not name a model: usually a base URL without ``/v1`` or a server without this endpoint."""

    code = "endpoint_not_found"
    default_hint = "Check the base URL in Settings (for OpenAI it ends in /v1); `gimp-openai doctor` helps."


class SettingsError(GimpOpenAIError):
    """The config file or a setting is unusable (bad JSON, a key inside the base URL, ...)."""

    code = "settings_error"
    default_hint = "Fix the value in Settings (or the config file named in the message)."


class InsecureTransportError(SettingsError):
    """The base URL is plain http to a host that is not this computer, and a key would travel in cleartext."""

    code = "insecure_http"
    default_hint = (
        "Use the server's https:// address as the base URL. Only if every network between here and that "
        "server is yours, allow plain http: `gimp-openai config set allow_insecure_http=true` "
        "(setting allow_insecure_http)."
    )
