"""Discovery against a real loopback server: live list, cache, offline, model_not_found, default choice."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from gimp_openai import capabilities as caps
from gimp_openai import discovery as D
from gimp_openai import errors as E
from gimp_openai import settings as S

from tests.engine._client_helpers import client_for
from tests.support.wire_server import Reply, WireServer

TODAY = dt.date(2026, 11, 25)
MODELS = [
    {"id": "dall-e-2", "created": 1, "shutdown_date": "2026-05-12"},
    {"id": "gpt-image-1", "created": 2, "shutdown_date": "2026-10-23"},
    {"id": "gpt-image-1.5", "created": 3, "shutdown_date": "2026-12-01"},
    {"id": "gpt-image-2", "created": 4, "shutdown_date": None},
    {"id": "gpt-image-2-2026-04-21", "created": 4},
    {"id": "gpt-4o", "created": 9},
    {"id": "whisper-1", "created": 9},
]


def answer(models):
    return Reply.json({"object": "list", "data": models})


@pytest.fixture
def server():
    with WireServer(routes={"/v1/models": answer(MODELS)}) as srv:
        yield srv


def listing(server, refresh=False, now=None, settings=None):
    settings = settings or S.Settings(base_url=server.url)
    return D.list_image_models(client_for(settings.base_url), settings, refresh=refresh, today=TODAY, now=now)


def test_live_list_keeps_image_models_with_status(server):
    models = listing(server)
    assert [m.id for m in models.models] == ["gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-1.5",
                                             "gpt-image-1", "dall-e-2"]
    status = {m.id: m.status for m in models.models}
    assert status == {"gpt-image-2": "live", "gpt-image-2-2026-04-21": "live", "gpt-image-1.5": "retiring",
                      "gpt-image-1": "shut_down", "dall-e-2": "shut_down"}
    assert [m.id for m in models.offered] == ["gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-1.5"]
    assert models.get("gpt-image-1.5").label() == "gpt-image-1.5 (shuts down 2026-12-01)"
    assert not models.from_cache and len(server.requests) == 1


def test_cache_serves_within_a_day_then_refreshes(server):
    t0 = time.time()
    listing(server, now=t0)
    again = listing(server, now=t0 + 3600)
    assert again.from_cache and [m.id for m in again.offered][0] == "gpt-image-2" and len(server.requests) == 1
    listing(server, refresh=True, now=t0 + 3700)
    assert len(server.requests) == 2
    later = listing(server, now=t0 + 3700 + 25 * 3600)
    assert not later.from_cache and len(server.requests) == 3


def test_cache_is_per_base_url(server):
    listing(server)
    other = S.Settings(base_url=server.origin + "/other/v1")
    server.routes["/other/v1/models"] = answer([{"id": "dall-e-2", "created": 1}])
    assert [m.id for m in listing(server, settings=other).models] == ["dall-e-2"]
    assert [m.id for m in listing(server).models][0] == "gpt-image-2"  # first cache untouched
    assert len(server.requests) == 2


def test_offline_serves_the_cache_and_says_how_old():
    t0 = time.time()
    with WireServer(routes={"/v1/models": answer(MODELS)}) as srv:
        url = srv.url
        D.list_image_models(client_for(url), S.Settings(base_url=url), today=TODAY, now=t0)
    offline = D.list_image_models(client_for(url, max_retries=0), S.Settings(base_url=url), refresh=True,
                                  today=TODAY, now=t0 + 3 * 3600)
    assert offline.from_cache and "3 hours ago" in offline.note and "connection_failed" in offline.note
    assert [m.id for m in offline.offered][0] == "gpt-image-2"
    assert "3 hours ago" in D.format_models(offline)


def test_offline_without_cache_raises():
    with WireServer() as srv:
        url = srv.url
    with pytest.raises(E.ConnectionFailedError):
        D.list_image_models(client_for(url, max_retries=0), S.Settings(base_url=url), today=TODAY)


def test_after_model_not_found_the_list_is_refetched_and_the_message_names_the_replacement(server):
    listing(server)
    server.routes["/v1/models"] = answer([*MODELS[2:], {"id": "gpt-image-2.5-sunburst", "created": 5}])
    server.push(Reply.error(400, "The model `gpt-image-1.5` has been deprecated", code="model_not_found"))
    client = client_for(server.url)
    with pytest.raises(E.ModelNotFoundError) as info:
        client.generate(model="gpt-image-1.5", prompt="x")
    explained = D.handle_model_not_found(info.value, client, S.Settings(base_url=server.url),
                                         today=dt.date(2026, 12, 2))
    assert explained.message == ("The model `gpt-image-1.5` was shut down on 2026-12-01. "
                                 "Use `gpt-image-2.5-sunburst` instead.")
    assert explained.replacement == "gpt-image-2.5-sunburst" and explained.model == "gpt-image-1.5"
    assert explained.to_dict()["replacement"] == "gpt-image-2.5-sunburst"
    assert [r.path for r in server.requests].count("/v1/models") == 2  # cache dropped, list fetched again
    assert [r.path for r in server.requests].count("/v1/images/generations") == 1  # never retried


def test_model_the_server_never_had():
    models = D.model_infos(MODELS, S.Settings(), TODAY)
    err = D.explain_model_not_found(E.ModelNotFoundError("nope", model="gpt-image-9"), models, today=TODAY)
    # same created date: the alias wins over its dated snapshot
    assert err.message == "The model `gpt-image-9` is not available on this server. Use `gpt-image-2` instead."
    # the hint names the field the artist has (a text field offering the listed models), and the CLI flag
    assert err.hint.startswith("Type gpt-image-2 in the Model field") and "--model gpt-image-2" in err.hint
    assert "model list" not in err.hint


@pytest.mark.parametrize(
    "saved, operation, expected",
    [
        ("gpt-image-2-2026-04-21", "edit", "gpt-image-2-2026-04-21"),  # saved and live
        ("gpt-image-1.5", "edit", "gpt-image-1.5"),  # retiring is still offered
        ("gpt-image-1", "edit", "gpt-image-2"),  # saved model died -> newest live GPT (tie -> alias)
        ("dall-e-2", "variation", "gpt-image-2"),  # dall-e-2 shut down: GPT edit path
        ("never-heard-of-it", "edit", "gpt-image-2"),
        (None, "generate", "gpt-image-2"),
        ("", "variation", "gpt-image-2"),
    ],
)
def test_choose_default_model(saved, operation, expected):
    models = D.model_infos(MODELS, S.Settings(), TODAY)
    assert D.choose_default_model(models, saved, operation) == expected


def test_variation_keeps_a_live_saved_dall_e_2_and_its_endpoint():
    models = D.model_infos([{"id": "dall-e-2", "created": 1}, {"id": "gpt-image-2", "created": 4}],
                           S.Settings(), TODAY)
    assert D.choose_default_model(models, "dall-e-2", "variation") == "dall-e-2"
    assert D.choose_default_model(models, None, "variation") == "gpt-image-2"
    assert D.choose_default_model(models, "dall-e-2", "edit") == "dall-e-2"


def test_newest_by_created_then_alias_then_name():
    models = D.model_infos([{"id": "gpt-image-2", "created": 4}, {"id": "gpt-image-2.5-sunburst", "created": 6},
                            {"id": "gpt-image-2.5-flare", "created": 6}, {"id": "gpt-image-3", "created": 5,
                                                                          "shutdown_date": "2026-12-10"}],
                           S.Settings(), TODAY)
    assert D.choose_default_model(models, None, "edit") == "gpt-image-2.5-sunburst"
    assert D.replacement_for("gpt-image-2", models) == "gpt-image-2.5-sunburst"


def test_nothing_offered_raises():
    models = D.model_infos(MODELS[:2], S.Settings(), TODAY)
    with pytest.raises(E.ModelNotFoundError):
        D.choose_default_model(models, "dall-e-2", "edit")


def test_ids_never_seen_before(server):
    server.routes["/v1/models"] = answer([{"id": "flux-pro", "created": 7}, {"id": "gpt-image-3-preview"},
                                          {"id": "sd-xl", "created": 8}])
    settings = S.Settings(base_url=server.url, extra_image_models=["flux-pro"], model_rules={"sd-xl": "dall-e-2"})
    models = listing(server, settings=settings)
    assert {m.id: m.family for m in models.models} == {"flux-pro": "gpt-image-2", "gpt-image-3-preview": "gpt-image-2",
                                                       "sd-xl": "dall-e-2"}
    assert D.replacement_for("sd-xl", models) == "flux-pro"


def test_server_without_models_endpoint_uses_settings(server):
    server.routes["/v1/models"] = Reply.error(404, "Not Found")
    settings = S.Settings(base_url=server.url, default_model="house-model", extra_image_models=["house-model"])
    models = listing(server, settings=settings)
    assert not models.listed and [m.id for m in models.models] == ["house-model"] and "/models" in models.note
    assert D.choose_default_model(models, "house-model", "edit") == "house-model"


def test_retiring_date_shown_and_shut_down_hidden_in_the_table(server):
    table = D.format_models(listing(server))
    assert "retiring 2026-12-01" in table and "gpt-image-1.5" in table
    assert "dall-e-2" not in table
    assert "multiples of 16" in table and "1024x1536" in table
    assert "shut down 2026-05-12" in D.format_models(listing(server), include_shut_down=True)
    report = D.models_report(listing(server))
    assert report["models"][0]["id"] == "gpt-image-2" and report["models"][2]["shutdown_date"] == "2026-12-01"


def test_remember_size_rule_persists_for_the_client():
    settings = S.load_settings()
    D.remember_size_rule("house-model", "gpt-image-1", settings)
    assert settings.model_rules == {"house-model": "gpt-image-1"}
    assert S.load_settings().model_rules == {"house-model": "gpt-image-1"}
    assert caps.family_for("house-model", S.load_settings().model_rules).name == "gpt-image-1"
    with pytest.raises(E.InvalidInputError):
        D.remember_size_rule("x", "no-such-family")


@pytest.mark.parametrize(
    ("dead", "listing_", "expected"),
    [
        # today's line-up: gpt-image-1 is gone and the rest of its family retires on 2026-12-01
        ("gpt-image-1", [{"id": "gpt-image-1.5", "created": 3, "shutdown_date": "2026-12-01"},
                         {"id": "chatgpt-image-latest", "created": 3, "shutdown_date": "2026-12-01"},
                         {"id": "gpt-image-2", "created": 2}], "gpt-image-2"),
        # a live family member wins
        ("gpt-image-1", [{"id": "gpt-image-1.5", "created": 3}, {"id": "gpt-image-2", "created": 4}], "gpt-image-1.5"),
        # only dying models left: the newest of them is still better than nothing
        ("gpt-image-1", [{"id": "gpt-image-1.5", "created": 3, "shutdown_date": "2026-12-01"},
                         {"id": "gpt-image-2", "created": 4, "shutdown_date": "2026-12-05"}], "gpt-image-2"),
        # a retiring newer GPT model loses to a live older one
        ("dall-e-2", [{"id": "gpt-image-2", "created": 4}, {"id": "gpt-image-3", "created": 5,
                                                           "shutdown_date": "2026-12-10"}], "gpt-image-2"),
    ],
)
def test_replacement_prefers_models_that_are_not_retiring(dead, listing_, expected):
    models = D.model_infos(listing_, S.Settings(), TODAY)
    assert D.replacement_for(dead, models) == expected
