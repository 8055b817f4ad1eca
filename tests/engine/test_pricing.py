"""The price table, usage -> dollars, the estimate and the history sums, table by table."""

from __future__ import annotations

import json
from datetime import date

import pytest
from gimp_openai import capabilities as caps
from gimp_openai import pricing as P


@pytest.mark.parametrize("model,label,as_of", [
    ("gpt-image-2", "gpt-image-2", "2026-04-21"),
    ("gpt-image-2-2026-04-21", "gpt-image-2", "2026-04-21"),
    ("gpt-image-2.5-flare", "gpt-image-2.5", "2026-09-09"),
    ("gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5", "2026-09-09"),
    ("gpt-image-2.6-sunburst", "gpt-image-2.6", "2026-11-04"),
    ("gpt-image-2.6-flare-2026-11-04", "gpt-image-2.6", "2026-11-04"),
    ("gpt-image-1", "gpt-image-1", "2025-04-23"),
    ("gpt-image-1-mini", "gpt-image-1-mini", "2025-10-06"),
    ("gpt-image-1.5", None, None),  # no published row read: tokens only
    ("my-server-model", None, None),
    ("dall-e-2", None, None),  # billed per image, no usage
])
def test_price_rows(model, label, as_of):
    price = P.price_for(model)
    if label is None:
        assert price is None
    else:
        assert price is not None and (price.label, price.as_of) == (label, as_of)
        assert price.source.startswith("https://")  # every row says where it was read


def test_every_row_is_dated_and_sourced():
    for _pattern, price in P.PRICES:
        date.fromisoformat(price.as_of)
        assert price.source and price.image_output > 0


def test_overrides_win_by_id_then_family():
    overrides = P.coerce_overrides({"gpt-image-2": "text_input=1,image_input=2,image_output=3,as_of=2026-12-01",
                                    "gpt-image-2.6": {"text_input": 4, "image_input": 5, "image_output": 6},
                                    "broken": "text_input=x"})
    assert set(overrides) == {"gpt-image-2", "gpt-image-2.6"}  # a row that does not check out is left out
    price = P.price_for("gpt-image-2", overrides)
    assert (price.image_output, price.as_of, price.source) == (3.0, "2026-12-01", "your settings (prices)")
    assert P.price_for("gpt-image-2.6-flare", overrides).image_output == 6.0  # by family
    assert P.price_for("gpt-image-2.5-flare", overrides).image_output == 30.0  # the table's
    assert P.price_for("acme", overrides, {"acme": "gpt-image-2.6"}).image_output == 6.0  # model_rules -> family


@pytest.mark.parametrize("text,problem", [
    ("text_input=5,image_input=8", "image_output is missing"),
    ("text_input=5,image_input=8,image_output=-1", "must be from 0"),
    ("text_input=5,image_input=8,image_output=nan", "must be from 0"),
    ("text_input=5,image_input=8,image_output=30,as_of=yesterday", "not a date"),
    ("text_input=5,image_input=8,image_output=30,colour=blue", "NAME=VALUE"),
])
def test_bad_overrides(text, problem):
    with pytest.raises(ValueError, match=problem):
        P.parse_override(text)


GPT2 = P.price_for("gpt-image-2")
GPT26 = P.price_for("gpt-image-2.6-sunburst")


@pytest.mark.parametrize("usage,price,usd,tokens", [
    # OpenAI's own examples for gpt-image-2, 1024x1024 output only: $0.006 / $0.053 / $0.211
    ({"input_tokens": 0, "output_tokens": 200, "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}},
     GPT2, 0.006, (0, 200)),
    ({"input_tokens": 0, "output_tokens": 7033, "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}},
     GPT2, 0.21099, (0, 7033)),
    # text 100 @ $5 + image 1000 @ $8 + image out 1000 @ $30 = 0.0005 + 0.008 + 0.03
    ({"input_tokens": 1100, "output_tokens": 1000, "input_tokens_details": {"text_tokens": 100, "image_tokens": 1000}},
     GPT2, 0.0385, (1100, 1000)),
    # output text tokens at gpt-image-2's text output price ($10)
    ({"input_tokens": 0, "output_tokens": 1100, "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
      "output_tokens_details": {"image_tokens": 1000, "text_tokens": 100}}, GPT2, 0.031, (0, 1100)),
    # 2.6 publishes no text output price: charged at the image output price (never too low)
    ({"input_tokens": 0, "output_tokens": 1100, "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
      "output_tokens_details": {"image_tokens": 1000, "text_tokens": 100}}, GPT26, 0.033, (0, 1100)),
    # no split of the input: charged at the image price
    ({"input_tokens": 1000, "output_tokens": 0}, GPT2, 0.008, (1000, 0)),
    # no price: tokens only
    ({"input_tokens": 10, "output_tokens": 20}, None, None, (10, 20)),
])
def test_cost_of_usage(usage, price, usd, tokens):
    cost = P.cost_of(usage, "m", price)
    assert (cost.input_tokens, cost.output_tokens) == tokens
    if usd is None:
        assert cost.usd is None and "no price known" in cost.text()
    else:
        assert cost.usd == pytest.approx(usd, rel=1e-3)
        assert cost.text().startswith("$")


@pytest.mark.parametrize("usage", [None, "lots", 12, {"input_tokens": "many", "output_tokens": -5}])
def test_odd_usage_never_fails(usage):
    cost = P.cost_of(usage, "m", GPT2)
    assert cost is None or (cost.input_tokens, cost.output_tokens, cost.usd) == (0, 0, 0.0)


FAM2, FAM25, FAM26 = (caps.FAMILIES[n] for n in (caps.GPT_IMAGE_2, caps.GPT_IMAGE_2_5, caps.GPT_IMAGE_2_6))


@pytest.mark.parametrize("family,n,size,quality,output,upper", [
    (FAM2, 1, (1024, 1024), "low", 200, 200),
    (FAM2, 1, (1024, 1024), "high", 7033, 7033),
    (FAM2, 2, (1024, 1024), "medium", 2 * 1767, 2 * 1767),
    (FAM2, 1, (2048, 1024), "high", 2 * 7033, 2 * 7033),  # scaled by pixels
    (FAM2, 1, (1024, 1024), "auto", 1767, 7033),  # auto: medium, up to high
    (FAM25, 3, (1024, 1024), "xhigh", 3 * 10550, 3 * 10550),
    (FAM26, 1, (1536, 1024), "max", round(14066 * 1.5), round(14066 * 1.5)),
])
def test_estimate_output_tokens(family, n, size, quality, output, upper):
    estimate = P.estimate("m", family, n=n, size=size, quality=quality, price=GPT2)
    assert (estimate.output_tokens, estimate.output_tokens_upper) == (output, upper)
    assert estimate.usd_upper >= estimate.usd


def test_estimate_in_dollars_matches_the_published_examples():
    """gpt-image-2 at 1024x1024, output only: OpenAI's $0.006 / $0.053 / $0.211 (within a cent's rounding)."""
    for quality, published in (("low", 0.006), ("medium", 0.053), ("high", 0.211)):
        estimate = P.estimate("gpt-image-2", FAM2, n=1, size=(1024, 1024), quality=quality, prompt="",
                              price=GPT2)
        output_only = estimate.usd - estimate.input_tokens * GPT2.text_input / 1e6
        assert output_only == pytest.approx(published, abs=0.0006)


def test_estimate_counts_inputs():
    bare = P.estimate("m", FAM2, n=1, size=(1024, 1024), quality="low", prompt="x" * 400, price=GPT2)
    assert bare.input_tokens == 100
    edit = P.estimate("m", FAM2, n=1, size=(1024, 1024), quality="low", prompt="x" * 400,
                      input_images=[(1024, 1024), (600, 400)], price=GPT2)
    assert edit.input_tokens == 100 + (65 + 129 * 4) + (65 + 129 * 2)


def test_estimate_without_price_or_token_rule():
    assert P.estimate("m", FAM2, n=1, size=(1024, 1024), quality="low").usd is None
    dalle = P.estimate("dall-e-2", caps.FAMILIES[caps.DALL_E_2], n=2, size=(512, 512), quality="auto", price=GPT2)
    assert dalle.usd is None and dalle.notes


def _sidecar(folder, name, *, model, time, usd=None, tokens=(0, 0)):
    data = {"model": model, "time": time, "prompt": "p"}
    if usd is not None or tokens != (0, 0):
        data["cost"] = {"usd": usd, "input_tokens": tokens[0], "output_tokens": tokens[1]}
    (folder / f"{name}.json").write_text(json.dumps(data))


def test_usage_sums_by_day_and_model(tmp_path):
    # one request of 2 images (shares of $0.10 each), another day, another model, one unpriced, one old sidecar
    _sidecar(tmp_path, "a1", model="gpt-image-2", time="2026-12-01T10:00:00+00:00", usd=0.10, tokens=(50, 500))
    _sidecar(tmp_path, "a2", model="gpt-image-2", time="2026-12-01T10:00:00+00:00", usd=0.10, tokens=(50, 500))
    _sidecar(tmp_path, "b", model="gpt-image-2.6-flare", time="2026-12-01T23:59:59+00:00", usd=0.02, tokens=(5, 9))
    _sidecar(tmp_path, "c", model="gpt-image-2", time="2026-12-03T08:00:00+00:00", usd=0.21, tokens=(1, 7033))
    _sidecar(tmp_path, "d", model="my-model", time="2026-12-03T09:00:00+00:00", usd=None, tokens=(10, 20))
    _sidecar(tmp_path, "old", model="gpt-image-1", time="2026-11-01T09:00:00+00:00")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    rows = P.usage_from_history(tmp_path)
    table = [(r.day, r.model, r.images, round(r.usd, 4), round(r.input_tokens), round(r.output_tokens),
              r.unpriced_images) for r in rows]
    assert table == [
        ("2026-11-01", "gpt-image-1", 1, 0.0, 0, 0, 1),
        ("2026-12-01", "gpt-image-2", 2, 0.2, 100, 1000, 0),
        ("2026-12-01", "gpt-image-2.6-flare", 1, 0.02, 5, 9, 0),
        ("2026-12-03", "gpt-image-2", 1, 0.21, 1, 7033, 0),
        ("2026-12-03", "my-model", 1, 0.0, 10, 20, 1),
    ]
    since = P.usage_from_history(tmp_path, date(2026, 12, 2))
    assert [(r.day, r.model) for r in since] == [("2026-12-03", "gpt-image-2"), ("2026-12-03", "my-model")]
    text = P.format_usage(rows)
    assert text.splitlines()[-1].split()[:2] == ["total", "6"] and "$0.430 (+2 unpriced)" in text


def test_usage_of_a_missing_folder(tmp_path):
    assert P.usage_from_history(tmp_path / "nowhere") == []


@pytest.mark.parametrize("usd,text", [(0.0053, "$0.0053"), (0.211, "$0.211"), (12.4, "$12.40"), (0.00004, "$0.0000")])
def test_dollars(usd, text):
    assert P.dollars(usd) == text
