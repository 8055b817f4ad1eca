"""The dialogs read like an artist's tool: the manifest's sections (basic fields, then Advanced ones), labels
with one mnemonic each that no other field or dialog button of the same dialog uses, words for every choice,
and the GIMP 2.10 registration following all of it (gimpfu's dialog is its parameter list, in order)."""

import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANIFEST = json.load(open(os.path.join(ROOT, "manifest", "procedures.json"), encoding="utf-8"))
PROCS = MANIFEST["procedures"]

#: Mnemonics the dialogs themselves take. GIMP 3's ProcedureDialog: _Reset, _Cancel, _OK, _Load Saved
#: Settings, _Save Settings, _Help; our expander: _Advanced. gimpfu (2.10): _Cancel, _OK, _Help.
GIMP3_BUTTONS = set("rcolsh")
GIMP2_BUTTONS = set("coh")


def public(proc):
    return [p for p in proc["params"] if not p.get("secret")]


def mnemonic(label):
    found = re.findall(r"(?<!_)_([^_])", label)
    return found[0].lower() if len(found) == 1 else None


@pytest.mark.parametrize("proc", PROCS, ids=[p["name"] for p in PROCS])
def test_advanced_parameters_follow_the_basic_ones(proc):
    flags = [bool(p.get("advanced")) for p in public(proc)]
    assert flags == sorted(flags), [(p["name"], p.get("advanced", False)) for p in public(proc)]


@pytest.mark.parametrize("proc", PROCS, ids=[p["name"] for p in PROCS])
def test_every_field_has_its_own_mnemonic(proc):
    shown = public(proc)
    keys = {p["name"]: mnemonic(p["label"]) for p in shown}
    assert all(keys.values()), {n: k for n, k in keys.items() if not k}
    assert len(set(keys.values())) == len(keys), keys
    taken = GIMP3_BUTTONS | ({"a"} if any(p.get("advanced") for p in shown) else set())
    assert not taken & set(keys.values()), {n: k for n, k in keys.items() if k in taken}
    assert not GIMP2_BUTTONS & set(keys.values())


def test_the_edit_dialog_starts_with_what_an_artist_sets_every_time():
    edit = next(p for p in PROCS if p["operation"] == "edit")
    basic = [p["name"] for p in public(edit) if not p.get("advanced")]
    assert basic == ["prompt", "model", "n", "quality"]
    background = next(p for p in edit["params"] if p["name"] == "background")
    assert background.get("dialog") is False and background["default"] == "auto"  # scripts keep it


@pytest.mark.parametrize("proc", PROCS, ids=[p["name"] for p in PROCS])
def test_every_choice_has_words_for_every_value(proc):
    for p in public(proc):
        if p["type"] == "choice":
            labels = p.get("value_labels") or {}
            assert list(labels) == p["values"], p["name"]
            assert all(labels.values()) and len(set(labels.values())) == len(labels), p["name"]


def test_labels_say_what_the_numbers_are():
    for proc in PROCS:
        for p in public(proc):
            if p["name"] == "context_padding":
                assert "× its size" in p["label"]  # a multiple of the selection's size, not px or %
            if p["name"] == "feather":
                assert "(px)" in p["label"]
            if p["name"] == "blend":
                assert p["value_labels"] == {"feather": "Soft edge", "poisson": "Seamless (gradient-domain)"}


def test_menu_sections_order_actions_then_settings():
    ordered = [p["operation"] for p in sorted(PROCS, key=lambda p: p["menu_section"])]
    assert ordered == ["edit", "variation", "generate", "expand", "batch", "pick", "next", "history", "settings"]
    setup = {p["menu_section"].split("-", 1)[1] for p in PROCS if p["operation"] == "settings"}
    actions = {p["menu_section"].split("-", 1)[1] for p in PROCS if p["operation"] != "settings"}
    assert setup.isdisjoint(actions)


def test_gimp2_registration_follows_the_sections(g2):
    """gimpfu shows one flat table in the PDB order: the basic fields first, then the Advanced ones, each
    labelled so, with the manifest's mnemonic (gimpfu turns underscores into mnemonics)."""
    regs = g2.gimpfu._registered_plugins_
    for proc in PROCS:
        params = regs[proc["name"]][8][2 if proc["image_params"] else 0:]
        names = [e[1] for e in params]
        assert names == [p["name"] for p in public(proc)]
        labels = [e[2] for e in params]
        advanced = [label.startswith("Advanced: ") for label in labels]
        assert advanced == [bool(p.get("advanced")) for p in public(proc)], labels
        assert advanced == sorted(advanced)
        for label, p in zip(labels, public(proc)):
            assert label.endswith(p["label"]) and mnemonic(label) == mnemonic(p["label"])
    edit = regs["python-fu-openai-edit-selection"][8]
    blend = next(e for e in edit if e[1] == "blend")
    assert blend[4] == (("Soft edge", "feather"), ("Seamless (gradient-domain)", "poisson"))
    context = next(e for e in edit if e[1] == "context_padding")
    assert context[2] == "Advanced: Conte_xt around the selection (× its size)" and context[3] == 0.25
