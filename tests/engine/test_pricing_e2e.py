"""The estimate before paying against the cost after, over real HTTP: the engine's operations against the local
server (a real subprocess on loopback), whose ``usage`` counts what it really received and returned.

The estimate must land within 25 % of the cost computed from the answer's usage, for every size, quality, n and
kind of request in the table; the sidecars must carry each image's share, adding up to the request's cost.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from gimp_openai import operations
from gimp_openai import settings as S
from gimp_openai.geometry import Rect

from tests.conftest import FAKE_KEY
from tests.server.helpers import photo


def engine_for(server, estimates: list) -> operations.Engine:
    engine = operations.Engine.from_settings(S.Settings(base_url=server.url), FAKE_KEY)
    engine.cost_gate = lambda estimate, item: estimates.append(estimate)
    return engine


def marks(height: int, width: int) -> np.ndarray:
    layer = np.zeros((height, width, 4), np.uint8)
    layer[height // 3 : height // 3 + 6, width // 4 : width // 2] = (255, 0, 0, 255)
    return layer


# (id, operation, model, n, quality, size or None, image (w, h) or None, extra)
CASES = [
    ("gen 1024 low", "generate", "gpt-image-2", 1, "low", "1024x1024", None, {}),
    ("gen 1536x1024 high n2", "generate", "gpt-image-2", 2, "high", "1536x1024", None, {}),
    ("gen auto-size auto n3", "generate", "gpt-image-2", 3, "auto", None, None, {}),
    ("gen 2.5 xhigh", "generate", "gpt-image-2.5-flare", 1, "xhigh", "1024x1024", None, {}),
    ("gen 2.6 max 2048x1152", "generate", "gpt-image-2.6-sunburst", 1, "max", "2048x1152", None, {}),
    ("gen 2.6 medium 1024x1536 n4", "generate", "gpt-image-2.6-flare", 4, "medium", "1024x1536", None, {}),
    ("edit 640x480 medium n2", "edit", "gpt-image-2", 2, "medium", None, (640, 480), {}),
    ("edit 1200x900 high", "edit", "gpt-image-2.5-sunburst", 1, "high", None, (1200, 900), {}),
    ("edit + reference low", "edit", "gpt-image-2", 1, "low", None, (800, 600), {"reference": True}),
    ("edit markup 2.6 low", "edit", "gpt-image-2.6-sunburst", 1, "low", None, (700, 500), {"markup": True}),
    ("variation via edit low n2", "variation", "gpt-image-2", 2, "low", None, (512, 512), {}),
    ("gen gpt-image-1 high", "generate", "gpt-image-1", 1, "high", "1024x1024", None, {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_estimate_within_25_percent_of_the_cost(local_server, case):
    label, operation, model, n, quality, size, image, extra = case
    estimates: list = []
    engine = engine_for(local_server, estimates)
    prompt = "a red kite over the lake, in the evening light"
    options = operations.Options(model=model, prompt=prompt, n=n, quality=quality, size=size,
                                 variation_prompt="a variation")
    if operation == "generate":
        outcome = operations.generate(engine, options)
    else:
        width, height = image
        pixels = photo(width, height)
        layer = Rect(0, 0, width, height)
        if operation == "variation":
            outcome = operations.variation(engine, options, place_pixels=pixels, layer=layer)
        else:
            selection = np.zeros((height, width), np.uint8)
            selection[height // 4 : height // 2, width // 4 : width // 2] = 255
            if extra.get("reference"):
                from gimp_openai.imaging import encode_png

                options.extra_images = [encode_png(photo(300, 200, seed=3))]
            if extra.get("markup"):
                options.markup = marks(height, width)
            outcome = operations.edit(engine, options, place_pixels=pixels, selection=selection, layer=layer)
    (estimate,) = estimates  # the gate saw exactly one estimate, before the request
    assert outcome.estimate is estimate
    cost = outcome.cost
    assert cost is not None and cost.usd is not None and estimate.usd is not None
    ratio = cost.usd / estimate.usd
    print(f"\n{label}: estimate {estimate.usd:.5f} (up to {estimate.usd_upper:.5f}), cost {cost.usd:.5f}, "
          f"ratio {ratio:.3f}; tokens in {estimate.input_tokens}/{cost.input_tokens}, "
          f"out {estimate.output_tokens}/{cost.output_tokens}")
    assert 0.75 <= ratio <= 1.25, (estimate.to_dict(), cost.to_dict())
    assert cost.usd <= estimate.usd_upper * 1.25  # the guard's figure is not beaten either
    # every paid image's sidecar carries its share; the shares add up to the request's cost
    shares = []
    for output in outcome.outputs:
        sidecar = json.loads(output.history_png.with_suffix(".json").read_text())
        assert sidecar["usage"]["output_tokens"] == cost.output_tokens
        shares.append(sidecar["cost"]["usd"])
        assert sidecar["cost"]["images_in_request"] == len(outcome.outputs)
    assert sum(shares) == pytest.approx(cost.usd, rel=1e-6)


def test_a_model_without_a_price_shows_tokens_only(local_server, tmp_path):
    """gpt-image-1.5 has no price row: the estimate and the cost say so and carry the tokens."""
    estimates: list = []
    engine = engine_for(local_server, estimates)
    outcome = operations.generate(engine, operations.Options(model="gpt-image-1.5", prompt="a kite", quality="low",
                                                             size="1024x1024"))
    assert estimates[0].usd is None and "no price known" in estimates[0].text()
    assert outcome.cost is not None and outcome.cost.usd is None and outcome.cost.output_tokens > 0
    sidecar = json.loads(outcome.outputs[0].history_png.with_suffix(".json").read_text())
    assert sidecar["cost"]["usd"] is None and sidecar["cost"]["output_tokens"] > 0


def test_a_refusing_gate_sends_nothing(local_server):
    from gimp_openai.errors import CostLimitError

    engine = operations.Engine.from_settings(S.Settings(base_url=local_server.url), FAKE_KEY)

    def refuse(estimate, item):
        raise CostLimitError("Not sent")

    engine.cost_gate = refuse
    with pytest.raises(CostLimitError):
        operations.generate(engine, operations.Options(model="gpt-image-2", prompt="a kite", quality="high"))
    assert local_server.stats()["endpoints"].get("generations", 0) == 0
