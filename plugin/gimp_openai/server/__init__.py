"""The local OpenAI-compatible images server: offline engine, strict validation, faults, models.

``gimp-openai serve`` and ``python -m gimp_openai.server`` call :func:`main`. Modules: ``app`` (options,
startup), ``handler`` (HTTP), ``multipart`` (form parser), ``rules`` (the validation table), ``models``
(list and lifecycle), ``faults`` (the X-Fault grammar), ``offline`` (inpainting, variations, generation),
``render`` (GPT-like re-rendering), ``engine`` (response bodies), ``stats`` (/_stats), ``files`` (url results).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from gimp_openai.server.app import main as run

    return run(argv)


__all__ = ["main"]
