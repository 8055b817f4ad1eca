"""Hypothesis fuzzing: mutated job files through the job protocol, and random or mutated server
answers (JSON bodies, headers, base64, status codes) through the real client over a loopback socket.
Never an unhandled exception: a clean result line, or an ``errors.GimpOpenAIError`` with a message."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path

import numpy as np
from gimp_openai import errors, jobs
from gimp_openai.client import ClientConfig, ImagesClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import FAKE_KEY
from tests.reliability import harness as H
from tests.support.wire_server import Reply, WireServer

# --- job protocol: start from a VALID job with real files, then mutate it -----------------------------------


def valid_job(folder: Path) -> dict:
    jf = H.JobFolder(folder)
    jf.add("img-1", H.textured(40, 60, 1), H.rect_selection(40, 60, (20, 10, 20, 15)))
    jf.add("img-2", H.textured(40, 60, 2), H.rect_selection(40, 60, (5, 5, 10, 10)))
    return json.loads(jf.write(out_dir=str(folder / "out")).read_text())


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["../../etc/passwd", "/etc/passwd", "img-1.png\x00x",
                                                           "", "img-1-sel.png", "out", "edit", "generate", "auto"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                          max_size=4), max_leaves=10)


def paths_of(obj, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths_of(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths_of(v, (*prefix, i))


@st.composite
def mutations(draw):
    """A list of (path index, operation, value) applied to the valid job."""
    return draw(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["set", "delete", "dup"]), values),
                         min_size=1, max_size=4))


def mutate(job: dict, plan) -> dict:
    job = copy.deepcopy(job)
    for index, op, value in plan:
        spots = [p for p, _ in paths_of(job) if p]
        if not spots:
            break
        path = spots[index % len(spots)]
        parent = job
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if op == "set":
            parent[last] = value
        elif op == "delete":
            del parent[last]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        else:
            parent[str(last) + "_"] = copy.deepcopy(parent[last])
    return job


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=mutations())
def test_mutated_valid_jobs_always_end_with_a_clean_result(tmp_path, monkeypatch, plan):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # closed port: fails fast, nothing reached
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    H.write_settings(max_retries=0, connect_timeout=1.0)
    folder = tmp_path / "job"
    folder.mkdir(exist_ok=True)
    job = mutate(valid_job(folder), plan)
    path = folder / "job.json"
    path.write_text(json.dumps(job, allow_nan=True), encoding="utf-8")
    out = io.StringIO()
    code = jobs.run_job(str(path), out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code in (jobs.EXIT_OK, jobs.EXIT_UNREADABLE)
    result = lines[-1]
    assert result["type"] == "result" and isinstance(result["ok"], bool)
    assert FAKE_KEY not in out.getvalue()
    errors_ = [result["error"]] + [i["error"] for i in result["items"] if i.get("error")]
    for error in filter(None, errors_):
        assert error["message"] and error["code"] != "internal_error", error
    for p in (folder / "out").glob("*") if (folder / "out").exists() else []:
        assert not p.name.startswith(".")  # no temp files


# --- server answers: random and mutated, through the real client ----------------------------------------------


def small_png(w=16, h=16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 4), 200, np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


GOOD = small_png()
GOOD_B64 = base64.b64encode(GOOD).decode()

b64_like = st.one_of(
    st.just(GOOD_B64),
    st.integers(0, len(GOOD_B64)).map(lambda n: GOOD_B64[:n]),  # truncated
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n", max_size=200),
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),  # valid base64, not an image
    st.binary(max_size=64).map(lambda b: base64.b64encode(GOOD[:20] + b).decode()),  # PNG header, then junk
    values,
)
entry = st.fixed_dictionaries({}, optional={"b64_json": b64_like, "url": st.one_of(values, st.sampled_from(
    ["http://example.com/x.png", "file:///etc/passwd", "https://", "ftp://127.0.0.1/a.png", "javascript:1"])),
    "revised_prompt": values})
bodies = st.one_of(
    st.fixed_dictionaries({"data": st.lists(entry | values, max_size=3)}, optional={"created": values,
                                                                                      "usage": values}),
    values.map(lambda v: {"data": v}),
    values,
)
raw_bodies = st.one_of(
    bodies.map(lambda b: json.dumps(b, allow_nan=True).encode()),
    st.binary(max_size=300),
    bodies.map(lambda b: json.dumps(b, allow_nan=True).encode()).flatmap(
        lambda raw: st.integers(0, max(0, len(raw))).map(lambda n: raw[:n])),  # cut JSON
)
headers = st.dictionaries(
    st.sampled_from(["Content-Type", "retry-after", "retry-after-ms", "x-should-retry", "x-request-id",
                     "Location", "Content-Encoding"]),
    st.one_of(st.sampled_from(["application/json", "text/html", "gzip", "true", "false", "-1", "1e309", "0.01",
                               "Wed, 21 Oct 2015 07:28:00 GMT", "http://127.0.0.1:1/x"]),
              st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)),
    max_size=4)
statuses = st.sampled_from([200, 200, 200, 201, 204, 302, 400, 401, 403, 404, 408, 409, 413, 429, 500, 502, 503])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=statuses, body=raw_bodies, hdrs=headers)
def test_random_server_answers_give_results_or_clear_errors(status, body, hdrs):
    if status == 302 and "Location" not in hdrs:
        hdrs = dict(hdrs, Location="http://127.0.0.1:1/elsewhere")
    hdrs = {k: v for k, v in hdrs.items() if k != "Content-Encoding" or v != "gzip"} if body[:2] != b"\x1f\x8b" \
        else hdrs
    with WireServer(default=Reply(status, {"Content-Type": "application/json", **hdrs}, body)) as server:
        config = ClientConfig(base_url=server.url, api_key=FAKE_KEY, max_retries=1, read_timeout=5.0,
                              connect_timeout=2.0, sleep=lambda s: None, max_download_bytes=1_000_000)
        client = ImagesClient(config)
        try:
            result = client.edit(model="gpt-image-1", prompt="x", image=GOOD, mask=None, n=1)
        except errors.GimpOpenAIError as exc:
            assert exc.message and FAKE_KEY not in str(exc) and FAKE_KEY not in repr(exc)
            assert isinstance(exc.to_dict(), dict)
        else:
            for image in result.images:
                assert image.data  # every image the client hands over has bytes
            assert FAKE_KEY not in repr(result)
        assert len(server.requests) <= 2
