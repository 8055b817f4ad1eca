"""Reference images sent after the image being edited, within what the model's family takes.

A reference larger than the size the model works at only costs upload bytes and input tokens: it is scaled
down to fit the request's target size (never up) and sent as PNG; one already that small, in a format the
family takes, is sent as it is. The family's limits decide what goes: at most ``max_images`` inputs in all
(the edited image is one), each within ``max_upload_bytes``, in ``input_mimetypes``; whatever does not fit
is left out and the notes say so, so the artist knows which references the model saw.
"""

from __future__ import annotations

from collections.abc import Sequence

from .capabilities import Family
from .request_checks import sniff_mimetype


def fit(references: Sequence[bytes], family: Family, target: tuple[int, int], *, used: int = 1,
        names: Sequence[str] = ()) -> tuple[list[bytes], list[str]]:
    """(the references to send, notes saying which were sent and which left out and why)."""
    sent, _labels, _left_out, summary = fit_named(references, family, target, used=used, names=names)
    return sent, summary


def fit_named(references: Sequence[bytes], family: Family, target: tuple[int, int], *, used: int = 1,
              names: Sequence[str] = ()) -> tuple[list[bytes], list[str], list[str], list[str]]:
    """(the references to send, their names, those left out with why, notes saying both): the names go into
    each result's history sidecar, so a kept image says what it was conditioned on, and to the host, which
    tells the artist."""
    from . import imaging

    labels = [names[i] if i < len(names) and names[i] else f"reference {i + 1}" for i in range(len(references))]
    room = max(0, family.max_images - used)
    sent: list[bytes] = []
    notes: list[str] = []
    left_out: list[str] = []
    for label, data in zip(labels, references, strict=False):
        if len(sent) >= room:
            left_out.append(f"{label} ({family.name} takes {family.max_images} input image(s) in all)")
            continue
        width, height = imaging.image_size_of(bytes(data), what=label)
        scale = min(1.0, target[0] / width, target[1] / height)
        if scale < 1.0 or sniff_mimetype(bytes(data)) not in family.input_mimetypes:
            pixels = imaging.decode_image(bytes(data), what=label)
            if scale < 1.0:
                pixels = imaging.resize(pixels, (max(1, round(width * scale)), max(1, round(height * scale))))
            data = imaging.encode_png(pixels)
        if family.max_upload_bytes and len(data) > family.max_upload_bytes:
            left_out.append(f"{label} ({len(data):,} bytes; at most {family.max_upload_bytes:,})")
            continue
        sent.append(bytes(data))
        notes.append(label)
    summary = []
    if notes:
        summary.append("references sent: " + ", ".join(notes))
    if left_out:
        summary.append("references left out: " + "; ".join(left_out))
    return sent, notes, left_out, summary
