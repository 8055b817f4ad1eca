"""A small, bounded ``multipart/form-data`` parser (the ``cgi`` module is gone in Python 3.13).

The whole body is already in memory and bounded by the server's body limit; this parser adds bounds on the
number of parts and the size of each part's header block, so a hostile body cannot make it loop or allocate
without limit. It follows RFC 7578: parts are separated by ``--boundary`` lines, each part has a header block
ending in an empty line, ``Content-Disposition: form-data; name="..."; filename="..."`` names it.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

MAX_PARTS = 64
MAX_PART_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not valid multipart/form-data (the message says why)."""


@dataclass
class FilePart:
    """An uploaded file: the form field it came in, its filename, declared content type and bytes."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class FormData:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[FilePart] = field(default_factory=list)

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None


_PARAM = re.compile(r';\s*([A-Za-z0-9_\-\*]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="a"; filename="b.png"'`` -> ("form-data", {"name": "a", "filename": "b.png"})."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if key.endswith("*"):  # RFC 5987: filename*=utf-8''name.png
            charset, _, encoded = raw.partition("''")
            try:
                raw = urllib.parse.unquote(encoded or raw, encoding=charset or "utf-8")
            except LookupError:
                raw = urllib.parse.unquote(encoded or raw)
            key = key[:-1]
        params[key] = raw
    return main.strip().lower(), params


def boundary_of(content_type: str) -> str:
    kind, params = header_params(content_type)
    if kind != "multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {kind or 'no content type'}")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise MultipartError("multipart/form-data without a valid boundary")
    return boundary


def parse_multipart(body: bytes, content_type: str) -> FormData:
    """Split ``body`` into text fields and file parts. Raises :class:`MultipartError` on malformed input."""
    delimiter = b"--" + boundary_of(content_type).encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError("the body does not contain the boundary")
    form = FormData()
    position = start + len(delimiter)
    parts = 0
    while True:
        if body.startswith(b"--", position):
            return form  # closing delimiter
        if body.startswith(b"\r\n", position):
            position += 2
        elif body.startswith(b"\n", position):
            position += 1
        else:
            raise MultipartError("malformed boundary line")
        parts += 1
        if parts > MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} parts")
        header_end = body.find(b"\r\n\r\n", position, position + MAX_PART_HEADER_BYTES)
        separator = 4
        if header_end < 0:
            header_end = body.find(b"\n\n", position, position + MAX_PART_HEADER_BYTES)
            separator = 2
        if header_end < 0:
            raise MultipartError("a part's headers are missing or too long")
        headers = _part_headers(body[position:header_end])
        content_start = header_end + separator
        next_delimiter = body.find(b"\r\n" + delimiter, content_start)
        if next_delimiter < 0:
            raise MultipartError("the body ends before the closing boundary")
        content = body[content_start:next_delimiter]
        position = next_delimiter + 2 + len(delimiter)
        _add_part(form, headers, content)


def _part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise MultipartError(f"malformed part header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def _add_part(form: FormData, headers: dict[str, str], content: bytes) -> None:
    disposition, params = header_params(headers.get("content-disposition", ""))
    if disposition != "form-data" or "name" not in params:
        raise MultipartError("a part has no Content-Disposition: form-data; name=...")
    name = params["name"]
    if "filename" in params:
        content_type = header_params(headers.get("content-type", "application/octet-stream"))[0]
        form.files.append(FilePart(name, params["filename"], content_type, content))
    else:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MultipartError(f"field {name!r} is not UTF-8 text") from exc
        form.fields.setdefault(name, []).append(text)
