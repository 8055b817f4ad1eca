"""The `background` parameter each family is sent (gpt-image-2's transparency is only a preview, so
'auto' means opaque there unless the artist asks for transparency)."""

import pytest
from gimp_openai import capabilities as caps
from gimp_openai.operations import request_background

from tests.engine.test_cli_e2e import SAMPLE, SAMPLE_SEL, cli


@pytest.mark.parametrize(
    ("model", "chosen", "sent"),
    [
        ("gpt-image-2", "auto", "opaque"),
        ("gpt-image-2", None, "opaque"),
        ("gpt-image-2-2026-04-21", "auto", "opaque"),
        ("gpt-image-2", "transparent", "transparent"),
        ("gpt-image-2", "opaque", "opaque"),
        ("gpt-image-1.5", "auto", None),
        ("gpt-image-1.5", "transparent", "transparent"),
        ("dall-e-2", "auto", None),
        ("dall-e-2", "transparent", None),  # dall-e-2 takes no background parameter at all
        ("some-compatible-model", "auto", "opaque"),  # unknown ids follow the gpt-image-2 rules
    ],
)
def test_background_sent_per_family(model, chosen, sent):
    assert request_background(caps.family_for(model), chosen) == sent


@pytest.mark.parametrize(("model", "wire"), [("gpt-image-2", "opaque"), ("gpt-image-1.5", None)])
def test_background_on_the_wire(local_server, tmp_path, model, wire):
    proc = cli("edit", str(SAMPLE), "--mask", str(SAMPLE_SEL), "--prompt", "remove the balloon", "--model", model,
               "--out", str(tmp_path), server=local_server)
    assert proc.returncode == 0, proc.stderr
    (request,) = [r for r in local_server.stats()["requests"] if r["path"].endswith("/images/edits")]
    assert request["fields"].get("background") == wire, request["fields"]
