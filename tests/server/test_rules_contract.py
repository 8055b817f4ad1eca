"""The server's rules table against the API's published facts (tests/fixtures/openai_images_contract.yaml):
enums, limits, counts, and the error body's shape on the wire."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
import yaml
from gimp_openai import capabilities as caps
from gimp_openai.server import rules

from tests.server.helpers import AUTH

CONTRACT = Path(__file__).resolve().parents[1] / "fixtures" / "openai_images_contract.yaml"


@pytest.fixture(scope="module")
def schemas():
    return yaml.safe_load(CONTRACT.read_text())["components"]["schemas"]


def enum_of(prop: dict) -> set[str]:
    """The string enum of a property, whether it is plain, under anyOf, or a $ref-free nullable anyOf."""
    if "enum" in prop:
        return set(prop["enum"])
    values: set[str] = set()
    for option in prop.get("anyOf", []):
        values |= set(option.get("enum", []))
    return values


#: The families the spec copy covers; the later ones are held to the fixture's ``reported`` section below.
SPEC_FAMILIES = (caps.DALL_E_2, caps.DALL_E_3, caps.GPT_IMAGE_1, caps.GPT_IMAGE_2)


def families_at(endpoint: str) -> list[caps.Family]:
    return [f for f in caps.FAMILIES.values() if endpoint in f.endpoints and f.name in SPEC_FAMILIES]


def table_sizes(endpoint: str) -> set[str]:
    sizes: set[str] = set()
    for family in families_at(endpoint):
        sizes |= set(family.sizes) | ({"auto"} if family.allows_auto_size else set())
    return sizes


def table_values(endpoint: str, name: str) -> set[str]:
    rule = next(r for r in rules.PARAMS if r.name == name)
    assert endpoint in rule.endpoints
    values: set[str] = set()
    for family in families_at(endpoint):
        if rule.values and rule.allowed(family.name, family):
            values |= set(rule.values(family))
    return values


REQUESTS = {
    caps.ENDPOINT_EDITS: "CreateImageEditRequest",
    caps.ENDPOINT_GENERATIONS: "CreateImageRequest",
    caps.ENDPOINT_VARIATIONS: "CreateImageVariationRequest",
}


@pytest.mark.parametrize("endpoint", list(REQUESTS))
def test_sizes_match(schemas, endpoint):
    assert table_sizes(endpoint) == enum_of(schemas[REQUESTS[endpoint]]["properties"]["size"])


@pytest.mark.parametrize(
    "endpoint,name",
    [
        (caps.ENDPOINT_EDITS, "quality"),
        (caps.ENDPOINT_GENERATIONS, "quality"),
        (caps.ENDPOINT_EDITS, "output_format"),
        (caps.ENDPOINT_GENERATIONS, "output_format"),
        (caps.ENDPOINT_EDITS, "background"),
        (caps.ENDPOINT_GENERATIONS, "background"),
        (caps.ENDPOINT_EDITS, "response_format"),
        (caps.ENDPOINT_GENERATIONS, "response_format"),
        (caps.ENDPOINT_VARIATIONS, "response_format"),
        (caps.ENDPOINT_GENERATIONS, "moderation"),
        (caps.ENDPOINT_GENERATIONS, "style"),
    ],
)
def test_enums_match(schemas, endpoint, name):
    assert table_values(endpoint, name) == enum_of(schemas[REQUESTS[endpoint]]["properties"][name])


def test_input_fidelity_enum(schemas):
    assert set(rules.INPUT_FIDELITIES) == set(schemas["InputFidelity"]["enum"])


def test_json_edit_moderation_and_compression(schemas):
    props = schemas["EditImageBodyJsonParam"]["properties"]
    assert set(rules.MODERATIONS) == enum_of(props["moderation"])
    compression = props["output_compression"]["anyOf"][0]
    rule = next(r for r in rules.PARAMS if r.name == "output_compression")
    assert (rule.minimum, rule.maximum(caps.FAMILIES[caps.GPT_IMAGE_1])) == (compression["minimum"],
                                                                             compression["maximum"])


@pytest.mark.parametrize("endpoint", list(REQUESTS))
def test_n_range(schemas, endpoint):
    n = schemas[REQUESTS[endpoint]]["properties"]["n"]
    rule = next(r for r in rules.PARAMS if r.name == "n")
    assert rule.minimum == n["minimum"] == rules.N_MIN
    assert max(rule.maximum(f) for f in families_at(endpoint)) == n["maximum"] == rules.N_MAX_CONTRACT


def test_dall_e_3_takes_one(schemas):
    description = schemas["CreateImageRequest"]["properties"]["n"]["description"]
    assert "For `dall-e-3`, only `n=1` is supported." in description
    assert caps.FAMILIES[caps.DALL_E_3].n_max == 1


def test_sixteen_images(schemas):
    image = schemas["CreateImageEditRequest"]["properties"]["image"]
    max_items = next(option["maxItems"] for option in image["anyOf"] if option.get("type") == "array")
    assert max_items == rules.MAX_IMAGES_CONTRACT == max(f.max_images for f in caps.FAMILIES.values())
    assert schemas["EditImageBodyJsonParam"]["properties"]["images"]["maxItems"] == max_items


@pytest.mark.parametrize("endpoint", [caps.ENDPOINT_EDITS, caps.ENDPOINT_GENERATIONS])
def test_prompt_limits_from_descriptions(schemas, endpoint):
    description = schemas[REQUESTS[endpoint]]["properties"]["prompt"]["description"]
    stated = {}
    for number, who in re.findall(r"(\d+) characters for ((?:`[\w\-.]+`)|the GPT image models)", description):
        stated[who.strip("`")] = int(number)
    assert stated["dall-e-2"] == caps.FAMILIES[caps.DALL_E_2].prompt_max
    assert stated["the GPT image models"] == caps.FAMILIES[caps.GPT_IMAGE_1].prompt_max
    assert stated["the GPT image models"] == caps.FAMILIES[caps.GPT_IMAGE_2].prompt_max
    if endpoint == caps.ENDPOINT_GENERATIONS:
        assert stated["dall-e-3"] == caps.FAMILIES[caps.DALL_E_3].prompt_max
    rule = next(r for r in rules.PARAMS if r.name == "prompt")
    assert rule.maximum and rule.maximum(caps.FAMILIES[caps.DALL_E_2]) == 1000


def test_upload_limits_from_descriptions(schemas):
    image = schemas["CreateImageEditRequest"]["properties"]["image"]["description"]
    assert "less than 50MB" in image and "less than 4MB" in image
    assert caps.FAMILIES[caps.GPT_IMAGE_1].max_upload_bytes == 50 * caps.MB
    assert caps.FAMILIES[caps.DALL_E_2].max_upload_bytes == 4 * caps.MB
    mask = schemas["CreateImageEditRequest"]["properties"]["mask"]["description"]
    assert "less than 4MB" in mask and rules.MASK_MAX_BYTES == 4 * caps.MB


def test_response_enums(schemas):
    response = schemas["ImagesResponse"]["properties"]
    assert set(response["output_format"]["enum"]) == set(rules.OUTPUT_FORMATS)
    assert set(response["background"]["enum"]) <= set(rules.BACKGROUNDS)


def test_defaults_match(schemas):
    for endpoint, name in REQUESTS.items():
        assert schemas[name]["properties"]["model"]["default"] == rules.DEFAULT_MODEL[endpoint]


def test_error_body_has_the_api_shape(schemas, local_server):
    """A refused request answers exactly the fields of the published Error schema, with their types."""
    answer = requests.post(local_server.url + "/images/generations", headers=AUTH, json={"prompt": "x", "n": 99},
                           timeout=30)
    assert answer.status_code == 400
    body = answer.json()
    assert set(body) == set(schemas["ErrorResponse"]["required"])
    error_schema = schemas["Error"]
    assert set(body["error"]) == set(error_schema["required"]) == set(error_schema["properties"])
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["type"], str)
    assert body["error"]["param"] == "n"


@pytest.fixture(scope="module")
def reported():
    return yaml.safe_load(CONTRACT.read_text())["reported"]


@pytest.mark.parametrize("name", [caps.GPT_IMAGE_2_5, caps.GPT_IMAGE_2_6])
def test_later_families_match_the_reported_facts(reported, name):
    facts, family = reported["families"][name], caps.FAMILIES[name]
    assert set(family.qualities) == set(facts["quality"])
    assert set(family.output_formats) == set(facts["output_format"])
    assert set(family.complexities) == set(facts["complexity"])
    assert family.markup is facts["markup"]
    base = caps.FAMILIES[facts["request_format"]]
    assert (family.free_sizes, family.sizes, family.endpoints, family.prompt_max, family.max_images,
            family.n_max) == (base.free_sizes, base.sizes, base.endpoints, base.prompt_max, base.max_images,
                              base.n_max)
    for model in facts["models"] + facts.get("snapshots", []):
        assert caps.family_for(model).name == name
    for value in facts["quality"]:  # the server takes every reported quality, and the wire names them
        assert value in rules.qualities(family)


def test_gpt_image_2_refuses_the_new_qualities(reported):
    refused = set(reported["quality_refused_by"]["gpt-image-2"])
    assert not refused & set(caps.FAMILIES[caps.GPT_IMAGE_2].qualities)


def test_usage_has_the_spec_shape(schemas, local_server):
    """Every GPT answer's usage: the ImageGenUsage fields, integers, and the details adding up."""
    answer = requests.post(local_server.url + "/images/generations", headers=AUTH, timeout=60,
                           json={"model": "gpt-image-2.6-flare", "prompt": "a kite", "quality": "low"})
    usage = answer.json()["usage"]
    spec = schemas["ImageGenUsage"]
    assert set(spec["required"]) <= set(usage) <= set(spec["properties"])
    inputs = usage["input_tokens_details"]
    assert set(inputs) == set(schemas["ImageGenInputUsageDetails"]["required"])
    outputs = usage["output_tokens_details"]
    assert set(outputs) == set(schemas["ImageGenOutputTokensDetails"]["required"])
    assert usage["input_tokens"] == inputs["text_tokens"] + inputs["image_tokens"]
    assert usage["output_tokens"] == outputs["image_tokens"] + outputs["text_tokens"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_unknown_model_answer_is_the_reported_one(reported, local_server):
    expected = reported["unknown_model_on_images"]
    answer = requests.post(local_server.url + "/images/generations", headers=AUTH, timeout=30,
                           json={"model": "gpt-image-7", "prompt": "p"})
    error = answer.json()["error"]
    assert (answer.status_code, error["code"], error["param"]) == (expected["status"], expected["code"],
                                                                   expected["param"])
    assert error["message"] == expected["message"].format(model="gpt-image-7")
