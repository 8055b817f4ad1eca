"""The client's rules for the 2.5/2.6 families, before anything is sent, and how it reads two new answers: a
retired model on /images/* and a parameter a server does not know."""

from __future__ import annotations

import json

import pytest
from gimp_openai import client as C
from gimp_openai import errors as E

from tests.engine._client_helpers import client_for, png


def answer(status: int, code: str | None, param: str | None, message: str) -> E.APIError:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                 "code": code}}).encode()
    return C.error_from_response(status, body, {}, model="gpt-image-1")


@pytest.mark.parametrize("status,code,param,message,kind", [
    (400, "invalid_value", "model", "The model 'gpt-image-1' does not exist.", E.ModelNotFoundError),
    (404, "model_not_found", None, "The model `gpt-image-1` does not exist or you do not have access to it.",
     E.ModelNotFoundError),
    (400, "invalid_value", "model", "Invalid value: 'gpt-4o'. This model does not support image generation.",
     E.InvalidRequestError),
    (400, "invalid_value", "quality", "Invalid value: 'xhigh'. Supported values are: 'low', 'medium'.",
     E.InvalidRequestError),
])
def test_which_answers_mean_the_model_is_gone(status, code, param, message, kind):
    error = answer(status, code, param, message)
    assert type(error) is kind


SENT = {"model", "prompt", "complexity", "background", "quality", "size"}


@pytest.mark.parametrize("code,param,message,expected", [
    ("unknown_parameter", "complexity", "Unknown parameter: 'complexity'.", "complexity"),
    (None, None, "Unrecognized request argument supplied: complexity", "complexity"),
    ("invalid_request_error", None, "Unknown parameter: 'background'.", "background"),
    ("unsupported_parameter", "moderation", "Unsupported parameter: 'moderation'.", None),  # not sent
    ("unknown_parameter", "quality", "Unknown parameter: 'quality'.", None),  # cannot do without it
    ("invalid_value", "background", "Invalid value: 'transparent'.", None),  # a value, not an unknown name
    ("unknown_parameter", "markup", "Unknown parameter: 'markup'.", None),  # the instructions: never dropped
])
def test_which_refusals_drop_a_parameter(code, param, message, expected):
    error = E.InvalidRequestError(message, status=400, param=param, server_code=code)
    assert C.refused_parameter(error, SENT | {"markup"}) == expected


@pytest.mark.parametrize("call,problem", [
    (dict(model="gpt-image-2", complexity="low"), "does not take complexity"),
    (dict(model="gpt-image-2.6-flare", complexity="extreme"), "complexity must be one of"),
    (dict(model="gpt-image-2", quality="xhigh"), "quality 'xhigh' is not one of"),
    (dict(model="gpt-image-2.5-flare", output_format="svg"), "output_format must be one of"),
])
def test_checked_before_sending(call, problem):
    client = client_for("http://127.0.0.1:9/v1")  # nothing listens there: a request would fail differently
    with pytest.raises(E.InvalidInputError, match=problem):
        client.generate(prompt="a kite", **call)


@pytest.mark.parametrize("model,mask,markup,problem", [
    ("gpt-image-2.5-sunburst", None, png(64, 64, (0, 0, 0, 0)), "does not take markup edits"),
    ("gpt-image-2.6-flare", png(64, 64), png(64, 64, (0, 0, 0, 0)), "without a mask"),
    ("gpt-image-2.6-flare", None, png(32, 32, (0, 0, 0, 0)), "must be the same size"),
])
def test_markup_checked_before_sending(model, mask, markup, problem):
    client = client_for("http://127.0.0.1:9/v1")
    with pytest.raises(E.InvalidInputError, match=problem):
        client.edit(model=model, prompt="remove it", image=png(64, 64), mask=mask, markup=markup)
