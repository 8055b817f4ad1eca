"""make_seamless: the contract operations.py codes against, and the outside-pixels property."""

import json

import numpy as np
import pytest
from gimp_openai.seamless import SeamlessResult, make_seamless
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.seamless.scenes import make_case, noise_result


def composite(original, image, selection):
    """Tiny local composite: mask 0 -> original bytes, else blend by the mask."""
    a = selection.astype(np.float32)[..., None] / 255.0
    mixed = np.clip(original * (1 - a) + image * a + 0.5, 0, 255).astype(np.uint8)
    return np.where(selection[..., None] == 0, original, mixed)


@pytest.mark.parametrize(("kind", "blend", "expect"), [
    ("aligned", "feather", r"^aligned already; tone ΔE 0\.0 \(no change\)$"),
    ("shifted", "feather", r"^shifted -?\d+\.\d, -?\d+\.\d px; scale \d\.\d{3}(; rotated -?\d\.\d\d°)?; tone ΔE "),
    ("toned", "feather", r"^aligned already; tone ΔE \d+\.\d → \d\.\d$"),
    ("noise", "feather", r"^not aligned: the result does not match the original outside the selection .* — "
                         r"composited as returned; tone "),
    ("toned", "poisson", r"^aligned already; tone ΔE \d+\.\d → \d\.\d; Poisson-blended$"),
])
def test_report_and_details(kind, blend, expect):
    rng = np.random.default_rng(20)
    case = make_case(rng, (256, 256), warp=kind == "shifted", tone=(0.1, 6, 0.1) if kind == "toned" else None)
    result = noise_result(rng, case.original) if kind == "noise" else case.result
    out = make_seamless(case.original, result, case.selection, blend=blend)
    assert isinstance(out, SeamlessResult)
    assert out.image.shape == case.original.shape and out.image.dtype == np.uint8
    import re
    assert re.match(expect, out.report), out.report
    json.dumps(out.details)
    assert set(out.details["alignment"]) >= {"dx", "dy", "scale", "angle_deg", "confidence", "applied",
                                              "residual_px", "note"}
    assert set(out.details["tone"]) >= {"delta_e_before", "delta_e_after", "applied"}
    assert out.details["blend"] == blend


def test_nothing_to_correct_returns_the_result_byte_identical_and_inputs_untouched():
    rng = np.random.default_rng(21)
    case = make_case(rng, (300, 260), warp=False)
    copies = [a.copy() for a in (case.original, case.result, case.selection)]
    out = make_seamless(case.original, case.result, case.selection)
    assert np.array_equal(out.image, case.result) and out.image is not case.result
    assert not out.details["alignment"]["applied"] and not out.details["tone"]["applied"]
    for before, now in zip(copies, (case.original, case.result, case.selection)):
        assert np.array_equal(before, now)


def test_corrections_can_be_switched_off():
    rng = np.random.default_rng(22)
    case = make_case(rng, (256, 256), tone=(0.1, 5, 0.1))
    out = make_seamless(case.original, case.result, case.selection, align=False, tone_match=False)
    assert np.array_equal(out.image, case.result)
    replay = out.details.pop("replay")
    assert out.details == {"alignment": None, "tone": None, "blend": "feather"}
    assert (replay["matrix"], replay["lab"], replay["poisson"]) == (None, None, False)  # nothing to put back
    assert out.report == "no corrections requested"


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"blend": "multiply"}, "blend"),
    ({"result": np.zeros((10, 10, 4), np.uint8)}, "differ"),
    ({"result": np.zeros((256, 256, 3), np.uint8)}, "RGBA"),
    ({"selection": np.zeros((256, 256), np.float32)}, "selection"),
])
def test_bad_input_is_refused(kwargs, why):
    rng = np.random.default_rng(23)
    case = make_case(rng, (256, 256), warp=False)
    args = {"original": case.original, "result": case.result, "selection": case.selection}
    blend = kwargs.pop("blend", "feather")
    args.update(kwargs)
    with pytest.raises(ValueError, match=why):
        make_seamless(args["original"], args["result"], args["selection"], blend=blend)


_CASES = [make_case(np.random.default_rng(100 + i), (256, 256), tone=(0.08, 5, 0.1), soft=float(i % 3))
          for i in range(3)]


@settings(max_examples=25, deadline=None)
@given(which=st.integers(0, 2), blend=st.sampled_from(["feather", "poisson"]), noise=st.booleans(),
       x0=st.integers(0, 200), y0=st.integers(0, 200), w=st.integers(1, 120), h=st.integers(1, 120),
       value=st.integers(1, 255), mode=st.sampled_from(["ellipse", "box", "both"]))
def test_outside_the_selection_stays_bit_identical(which, blend, noise, x0, y0, w, h, value, mode):
    case = _CASES[which]
    if mode == "ellipse":
        sel = case.selection
    else:
        sel = np.zeros_like(case.selection)
        sel[y0:y0 + h, x0:x0 + w] = value
        if mode == "both":
            sel = np.maximum(sel, case.selection)
    result = noise_result(np.random.default_rng(x0), case.original) if noise else case.result
    original = case.original.copy()
    out = make_seamless(original, result, sel, align=True, tone_match=True, blend=blend)
    final = composite(original, out.image, sel)
    assert np.array_equal(final[sel == 0], case.original[sel == 0])
    assert np.array_equal(original, case.original)


@pytest.mark.parametrize(("align", "tone"), [(True, True), (True, False), (False, True)])
def test_replay_puts_the_same_corrections_into_the_result_bit_for_bit(align, tone):
    """What history does: the record in the details, through JSON, applied to the result alone (no original)."""

    from gimp_openai.seamless import replay

    rng = np.random.default_rng(31)
    case = make_case(rng, (256, 256), tone=(0.1, 5, 0.1))
    out = make_seamless(case.original, case.result, case.selection, align=align, tone_match=tone)
    record = json.loads(json.dumps(out.details["replay"]))
    assert (record["matrix"] is not None) == align and (record["lab"] is not None) == tone, out.report
    again = replay(case.result, record)
    assert again.tobytes() == out.image.tobytes()
    with pytest.raises(ValueError, match="outside"):
        replay(case.result[:100, :100], record)
    with pytest.raises(ValueError, match="not a record"):
        replay(case.result, {"matrix": "x"})
