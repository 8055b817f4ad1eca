"""The dialogs read like an artist's tool: the manifest's sections (basic fields, then Advanced ones), labels
with one mnemonic each that no other field or dialog button of the same dialog uses, words for every choice,
and the GIMP 2.10 registration following all of it (gimpfu's dialog is its parameter list, in order)."""

import json
import os
import re
import sys

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


#: The menu an artist reads: what GIMP 3 shows (tests/gimp3/test_menu.py opens it), in three groups.
MENU = [("actions", ["edit", "variation", "generate", "expand", "batch"]),
        ("results", ["pick", "next", "history"]),
        ("setup", ["settings"])]


def test_menu_groups_actions_then_results_then_settings():
    sys.path.insert(0, os.path.join(ROOT, "plugin", "hostlib"))
    import gimp_openai_host as host

    by_name = {p["name"]: p["operation"] for p in PROCS}
    order = host.menu_order(MANIFEST)
    assert [(s, [by_name[n] for n in names]) for s, names in order] == MENU
    assert sorted(n for _, names in order for n in names) == sorted(by_name)  # each procedure once
    broken = dict(MANIFEST, procedures=[dict(PROCS[0], menu_section="tools")] + PROCS[1:])
    with pytest.raises(ValueError, match="menu_section 'tools', not one of actions, results, setup"):
        host.menu_order(broken)


def _punctuation_skipped(text):
    """What most locales' collation compares first (glibc's iso14651: punctuation and case come later)."""
    return "".join(c for c in text.lower() if c.isalnum())


def test_menu_places_sort_alike_in_every_locale():
    """GIMP 3 orders entries by g_utf8_collate_key of the menu path: byte order in C, punctuation skipped in
    en_US or de_DE. The places give the menu's order both ways (the old "3b-images" put Expand Canvas after
    Generate in C and before it in en_US)."""
    sys.path.insert(0, os.path.join(ROOT, "plugin", "hostlib"))
    import gimp_openai_host as host

    wanted = [n for _, names in host.menu_order(MANIFEST) for n in names]
    keys = {p["name"]: f"/Filters/OpenAI/[{host.menu_place(MANIFEST, p['name'])}]/{p['label']}{p['name']}"
            for p in PROCS}
    assert sorted(wanted, key=lambda n: keys[n]) == wanted
    assert sorted(wanted, key=lambda n: _punctuation_skipped(keys[n])) == wanted
    assert host.menu_place(MANIFEST, "python-fu-openai-expand-canvas") == "1-04-actions"
    assert host.menu_place(MANIFEST, "python-fu-openai-settings") == "3-01-setup"


def test_gimp2_menu_is_one_flat_path():
    """GIMP 2.10 takes a menu path literally: a bracketed section would become a submenu named "[…]"."""
    assert "[" not in MANIFEST["menu"]["gimp2"]


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
