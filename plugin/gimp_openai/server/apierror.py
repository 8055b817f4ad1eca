"""The error answers of the local server, in the real API's shape: ``{"error": {message, type, param, code}}``.

One exception class carries status, body fields and extra headers, so every layer (body reading, auth,
validation, faults) can stop a request the same way and the handler writes exactly one kind of error answer.
The helpers below reproduce OpenAI's wording where it is known, so clients are tested against real text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

#: How much of a client's own text (a parameter name, a value) an error message quotes back.
MAX_ECHO = 100


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (marked with an ellipsis): errors never echo megabytes back."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class ApiError(Exception):
    """A request the server refuses. ``raw_body`` replaces the JSON body (e.g. a proxy's HTML 502 page)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - the API's own field name
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw_body: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = clip(param, MAX_ECHO) if param is not None else None
        self.code = code
        self.headers = dict(headers or {})
        self.raw_body = raw_body
        self.content_type = content_type

    def to_dict(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        if self.raw_body is not None:
            return self.raw_body
        return json.dumps(self.to_dict()).encode()


def _quote_list(values: Iterable[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def invalid_value(param: str, value: object, allowed: Iterable[str] | None = None, detail: str = "") -> ApiError:
    """400 ``invalid_value`` worded like OpenAI's: "Invalid value: 'x'. Supported values are: 'a', 'b'."."""
    message = f"Invalid value: '{clip(str(value), MAX_ECHO)}'."
    if allowed is not None:
        message += f" Supported values are: {_quote_list(allowed)}."
    if detail:
        message += f" {detail}"
    return ApiError(400, message, param=param, code="invalid_value")


def unknown_parameter(param: str, detail: str = "") -> ApiError:
    message = f"Unknown parameter: '{clip(param, MAX_ECHO)}'."
    if detail:
        message += f" {detail}"
    return ApiError(400, message, param=param, code="unknown_parameter")


def missing_parameter(param: str) -> ApiError:
    return ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def invalid_type(param: str, expected: str, got: str) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )


def integer_out_of_range(param: str, value: int, minimum: int, maximum: int) -> ApiError:
    if value < minimum:
        return ApiError(
            400,
            f"Invalid '{param}': integer below minimum value. Expected a value >= {minimum}, but got {value} instead.",
            param=param,
            code="integer_below_min_value",
        )
    return ApiError(
        400,
        f"Invalid '{param}': integer above maximum value. Expected a value <= {maximum}, but got {value} instead.",
        param=param,
        code="integer_above_max_value",
    )


def string_too_long(param: str, length: int, maximum: int) -> ApiError:
    return ApiError(
        400,
        f"Invalid '{param}': string too long. Expected a string with maximum length {maximum}, "
        f"but got a string with length {length} instead.",
        param=param,
        code="string_above_max_length",
    )


def string_too_short(param: str) -> ApiError:
    return ApiError(
        400,
        f"Invalid '{param}': string too short. Expected a string with minimum length 1, "
        "but got an empty string instead.",
        param=param,
        code="string_below_min_length",
    )


def array_too_long(param: str, length: int, maximum: int) -> ApiError:
    return ApiError(
        400,
        f"Invalid '{param}': array too long. Expected an array with maximum length {maximum}, "
        f"but got an array with length {length} instead.",
        param=param,
        code="array_above_max_length",
    )


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def model_does_not_exist(model: str) -> ApiError:
    """What the real API answers on /images/* for a model id it does not know (or no longer serves): 400
    ``invalid_value`` on ``model``, not the 404 ``model_not_found`` of /models/{id}."""
    return ApiError(400, f"The model '{clip(model, MAX_ECHO)}' does not exist.", param="model", code="invalid_value")


def model_shut_down(model: str) -> ApiError:
    """What OpenAI answers for a model past its shutdown date, so the engine's handling of it is tested offline."""
    return ApiError(
        404,
        f"The model `{model}` has been deprecated, learn more here: https://platform.openai.com/docs/deprecations",
        code="model_not_found",
    )


def missing_api_key() -> ApiError:
    return ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
        "auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from "
        "https://platform.openai.com/account/api-keys.",
        code=None,
    )


def invalid_api_key() -> ApiError:
    """Never echoes any part of the key (the real API shows a masked fragment; this server shows none)."""
    return ApiError(
        401,
        "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def not_found_route(method: str, path: str) -> ApiError:
    return ApiError(404, f"Invalid URL ({method} {path})", code=None)


def request_too_large(limit_bytes: int) -> ApiError:
    """413 for a body over the server's limit, whether declared (Content-Length) or counted (chunked)."""
    return ApiError(413, f"Request body too large: the limit is {limit_bytes // (1024 * 1024)} MB.",
                    code="request_too_large")


def request_timeout(phase: str, seconds: float) -> ApiError:
    """408 when the client stops sending: ``phase`` is "headers" or "body"."""
    return ApiError(408, f"The request {phase} did not arrive within {seconds:g} s.", code="request_timeout")


def server_busy(what: str, retry_after: int) -> ApiError:
    """429 when the server's own capacity (open connections, concurrent image work) is used up.

    Sent with ``retry-after`` so a well-behaved client waits and tries again instead of failing."""
    return ApiError(
        429,
        f"The local server is busy ({what}). Please try again in {retry_after}s.",
        type="requests",
        code="server_busy",
        headers={"retry-after": str(retry_after)},
    )


def internal_error(detail: str) -> ApiError:
    """500 for a bug in this server: the client gets the API's shape, never a dropped connection."""
    return ApiError(500, f"The local server failed while handling the request ({detail}).", type="server_error")


#: The HTTP layer's own refusals (``http.server`` calls ``send_error`` with these), in the API's wording style.
HTTP_LAYER_ERRORS = {
    400: ("Bad request: {detail}.", "invalid_request"),
    408: ("The request did not arrive in time.", "request_timeout"),
    411: ("A POST body needs a Content-Length or chunked Transfer-Encoding.", "length_required"),
    413: ("Request body too large.", "request_too_large"),
    414: ("The request line is too long.", "uri_too_long"),
    417: ("Expectation failed.", "invalid_request"),
    431: ("The request headers are too large or too many.", "headers_too_large"),
    501: ("The method is not supported: {detail}.", "method_not_supported"),
    505: ("The HTTP version is not supported: use HTTP/1.1.", "http_version_not_supported"),
}


def http_layer(status: int, detail: str | None = None) -> ApiError:
    """What ``send_error`` answers: the same JSON shape as every other error (never http.server's HTML page)."""
    template, code = HTTP_LAYER_ERRORS.get(status, ("The request could not be handled: {detail}.", "invalid_request"))
    message = template.format(detail=(detail or "malformed request").rstrip("."))
    return ApiError(status, message, code=code)
