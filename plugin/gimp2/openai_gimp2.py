#!/usr/bin/env python2
# -*- coding: utf-8 -*-
"""GIMP 2.10 host of gimp-openai: Filters > OpenAI > Edit Selection, Variations, Generate, Batch, Settings.

A thin host. GIMP 2.10 runs plug-ins under its bundled Python 2.7, so this file is Python 2.7 (and imports
under Python 3 for the tests), uses only the standard library and gimpfu, and leaves all the work to the engine
(one ``python3 -m gimp_openai session`` per run, see docs/architecture.md) through plugin/hostlib/gimp_openai_host.py.
What it does itself is what only GIMP can: read the planned region and the selection, and put results back as
layers, in one undo step, with messages instead of tracebacks.
"""

from __future__ import absolute_import, division, print_function

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
#: Where the support files (hostlib module, manifest, engine record) live: the installed layout puts them in a
#: non-executable subfolder (GIMP 2.10 does not reliably load plug-ins from subfolders, and on Windows runs
#: every .py it finds in plug-ins/), a flat install beside this file, and the repository in ../hostlib.
SUPPORT_FOLDER = "gimp_openai_support"
SUPPORT_DIRS = [os.path.join(_HERE, SUPPORT_FOLDER), _HERE]
for _folder in SUPPORT_DIRS + [os.path.join(_HERE, os.pardir, "hostlib")]:
    if os.path.isfile(os.path.join(_folder, "gimp_openai_host.py")):
        sys.path.insert(0, os.path.abspath(_folder))
        break

import gimp_openai_host as host  # noqa: E402

if "-run" in sys.argv:  # GIMP runs a procedure (not a query): the engine starts while gimpfu loads
    host.prestart_engine(SUPPORT_DIRS)

import gimp  # noqa: E402
import gimpfu  # noqa: E402
import gimp_openai_workflow as flow  # noqa: E402
from gimpfu import pdb  # noqa: E402

RUN_INTERACTIVE, RUN_NONINTERACTIVE = gimpfu.RUN_INTERACTIVE, gimpfu.RUN_NONINTERACTIVE
ADD_WHITE_MASK, ADD_SELECTION_MASK = 0, 4
PARASITE_PERSISTENT = 1
RGB, GRAY, INDEXED = 0, 1, 2

#: How the current call was started; gimpfu does not tell the function, so our run wrapper records it.
_RUN = {"mode": RUN_NONINTERACTIVE}

#: Asks the artist a yes/no question (interactive runs only). Replaced in tests; GTK in GIMP.
ASK = None
#: Asks for a secret in a hidden field; returns the text or None. Replaced in tests; GTK in GIMP.
ASK_SECRET = None

PF_FOR_TYPE = {"string": gimpfu.PF_STRING, "text": gimpfu.PF_TEXT, "int": gimpfu.PF_SPINNER,
               "float": gimpfu.PF_SLIDER, "bool": gimpfu.PF_TOGGLE, "choice": gimpfu.PF_RADIO,
               "dirname": gimpfu.PF_DIRNAME}


# ---------------------------------------------------------------------------------------- registration

#: gimpfu builds its dialog as one flat table in the PDB order and has no expander, frame or separator to
#: offer, so the manifest's Advanced parameters (listed after the others) carry this prefix in 2.10: the
#: artist reads the basic fields first and sees where the advanced ones begin. Hiding them is not an option,
#: since gimpfu's table and the PDB arguments scripts pass are the same list.
ADVANCED_PREFIX = u"Advanced: "


def dialog_label(p):
    """The 2.10 label of one parameter: the manifest's (with its mnemonic: gimpfu sets use_underline and the
    mnemonic widget on every label), prefixed when it belongs to the Advanced section."""
    return (ADVANCED_PREFIX if p.get("advanced") else u"") + host.to_text(p["label"])


def pf_params(proc):
    """gimpfu parameter tuples for one manifest procedure (image and drawable first when it takes them)."""
    params = []
    if proc.get("image_params"):
        params.append((gimpfu.PF_IMAGE, "image", "Input image", None))
        params.append((gimpfu.PF_DRAWABLE, "drawable", "Input drawable", None))
    for p in host.public_params(proc):
        pf = PF_FOR_TYPE[p["type"]]
        entry = [pf, str(p["name"]), _native(dialog_label(p)), p["default"]]
        if p["type"] in ("int", "float"):
            entry.append((p["min"], p["max"], p["step"]))
        elif p["type"] == "choice":
            entry.append(tuple((_native(host.value_label(p, v)), _native(v)) for v in p["values"]))
        if p["type"] in ("string", "text", "dirname", "choice"):
            entry[3] = _native(p["default"])
        params.append(tuple(entry))
    return params


#: The registered procedures by name (filled by register_all), for what our run wrapper does before gimpfu's.
_PROCS = {}


def register_all(manifest=None):
    """Register every manifest procedure with gimpfu, under the manifest's GIMP 2 menu."""
    manifest = manifest or host.load_manifest(host.find_manifest(SUPPORT_DIRS))
    for proc in manifest["procedures"]:
        _PROCS[str(proc["name"])] = proc
        gimpfu.register(str(proc["name"]), _native(proc["blurb"]), _native(proc["help"]),
                        _native(manifest["author"]), _native(manifest["copyright"]), str(manifest["date"]),
                        _native(proc["label"]), str(proc["image_types"]), pf_params(proc), [],
                        _runner(proc), menu=str(manifest["menu"]["gimp2"]))
    return manifest


def _runner(proc):
    """The function gimpfu calls: positional PDB arguments -> a dict, then the operation, guarded."""
    names = [p["name"] for p in host.public_params(proc)]
    handler = _handler(proc)

    def run(*values):
        values = list(values)
        image = drawable = None
        if proc.get("image_params"):
            image, drawable = values[0], values[1]
            values = values[2:]
        args = dict(zip(names, values))
        for p in host.public_params(proc):
            if p["type"] == "choice":
                args[p["name"]] = host.check_choice(p, args[p["name"]]) if p["name"] in args else p["default"]
        return _guarded(lambda: handler(image, drawable, args))
    run.__name__ = str(proc["name"].replace("-", "_"))
    return run


def _run(proc_name, params):
    """Our gimp.main run function: remember the run mode; before gimpfu opens its dialog, run the checks that
    need no server and seed the dialog (the Settings dialog opens with what is saved); then gimpfu."""
    _RUN["mode"] = params[0]
    proc = _PROCS.get(proc_name)
    if params[0] == RUN_INTERACTIVE and proc is not None:
        image, drawable = (params[1], params[2]) if proc.get("image_params") and len(params) > 2 else (None, None)
        checked = _guarded(lambda: [_before_dialog(proc, image, drawable)])
        if checked is None:  # refused or declined: said already, no dialog
            return None
        _seed_dialog(proc_name, proc, checked[0])
    return gimpfu._run(proc_name, params)


def _before_dialog(proc, image, drawable):
    """{name: value} to show in the dialog, or None when the run cannot happen (the workflow says why)."""
    if proc["operation"] == "settings":
        saved = host.saved_settings(python=host.find_engine_python(SUPPORT_DIRS)) or {}
        values = {"base_url": saved.get("base_url") or u"", "default_model": saved.get("default_model") or u"",
                  "history_folder": saved.get("history_dir") or u"", "change_key": False}
        if isinstance(saved.get("max_cost"), (int, float)):
            values["max_cost"] = min(1000.0, max(0.0, float(saved["max_cost"])))
        return values
    return flow.before_dialog(Gimp2(), proc, image, drawable, _remembered(proc))


def _remembered(proc):
    """The values gimpfu's dialog would open with, by name."""
    names = [p[1] for p in pf_params(proc)]
    return dict(zip(names, gimpfu._get_defaults(str(proc["name"]))))


def _seed_dialog(proc_name, proc, changes):
    if not changes:
        return
    names = [p[1] for p in pf_params(proc)]
    values = list(gimpfu._get_defaults(proc_name))
    for name, value in changes.items():
        if name in names:
            values[names.index(name)] = _native(value) if isinstance(value, (type(u""), str)) else value
    gimpfu._set_defaults(proc_name, values)


def main():
    gimp.main(None, None, gimpfu._query, _run)


# ---------------------------------------------------------------------------------------------- helpers

def _native(text):
    """GIMP 2's Python 2 wants UTF-8 byte strings; Python 3 wants text."""
    text = host.to_text(text)
    if sys.version_info[0] == 2:
        return text.encode("utf-8")
    return text


def _interactive():
    return _RUN["mode"] == RUN_INTERACTIVE


def _secrets():
    return host.env_secrets()


def _guarded(body):
    """One operation: context push/pop, display flush, and errors as plain messages (the workflow inserts
    each image's results in one undo group of its own).

    Non-interactive callers also get the failure (RuntimeError), as any failing PDB call gives them.
    """
    pdb.gimp_context_push()
    try:
        return body()
    except flow.Stop as stop:
        if stop.args:
            gimp.message(_native(stop.args[0]))
        return None
    except host.HostError as exc:
        _fail(exc)
    except Exception as exc:  # never a traceback dialog: say what happened in plain words
        _fail(host.HostError(u"The OpenAI plug-in hit an unexpected problem: %s" % host.to_text(exc),
                             u"Try again; if it keeps happening, run 'gimp-openai doctor' in a terminal and "
                             u"report the message.", "internal_error"))
    finally:
        pdb.gimp_context_pop()
        try:
            pdb.gimp_progress_end()
        except Exception:  # older GIMPs have no progress to end outside a display
            pass
        gimp.displays_flush()


def _fail(exc):
    text = host.describe_error(exc, _secrets())
    gimp.message(_native(text))
    if not _interactive():
        raise RuntimeError(_native(text))


def _ask(question):
    """Yes/no for interactive runs (GTK in GIMP; tests replace ASK)."""
    if ASK is not None:
        return bool(ASK(question))
    try:
        import gtk
    except ImportError:
        return False
    dialog = gtk.MessageDialog(None, 0, gtk.MESSAGE_QUESTION, gtk.BUTTONS_YES_NO, _native(question))
    answer = dialog.run()
    dialog.destroy()
    return answer == gtk.RESPONSE_YES


def _ask_secret(question):
    """A hidden text field for the API key (never a PDB argument, so never in gimpshelf's last values)."""
    if ASK_SECRET is not None:
        return ASK_SECRET(question)
    try:
        import gtk
    except ImportError:
        return None
    dialog = gtk.MessageDialog(None, 0, gtk.MESSAGE_QUESTION, gtk.BUTTONS_OK_CANCEL, _native(question))
    entry = gtk.Entry()
    entry.set_visibility(False)
    dialog.vbox.pack_end(entry)
    entry.show()
    answer = dialog.run()
    text = entry.get_text()
    dialog.destroy()
    return text if answer == gtk.RESPONSE_OK else None


def _rect(x, y, w, h):
    return {"x": int(x), "y": int(y), "width": int(w), "height": int(h)}


def _layer_rect(layer):
    x, y = layer.offsets
    return _rect(x, y, layer.width, layer.height)


def _image_label(image):
    name = pdb.gimp_image_get_filename(image) or getattr(image, "name", None) or "Untitled"
    return u"%s (#%s)" % (os.path.basename(host.to_text(name)), getattr(image, "ID", "?"))


# ------------------------------------------------------------------------------------------------ export

def export_region(layer, place, path):
    """Write ``place`` (image coordinates, inside the layer) of the layer as an 8-bit RGBA PNG."""
    ox, oy = layer.offsets
    lx, ly, w, h = place["x"] - ox, place["y"] - oy, place["width"], place["height"]
    rgn = layer.get_pixel_rgn(lx, ly, w, h, False, False)
    host.write_png(path, w, h, host.to_rgba(rgn[lx:lx + w, ly:ly + h], layer.bpp), 4)


def export_selection(image, place, path):
    """Write the selection inside ``place`` as an 8-bit gray PNG; off-canvas parts are unselected
    (GIMP's selection only covers the canvas; a whole-layer run's selection the workflow writes itself)."""
    w, h = place["width"], place["height"]
    out = bytearray(w * h)
    box = flow.intersect(place, _rect(0, 0, image.width, image.height))
    if box["width"] and box["height"]:
        sel = image.selection
        rgn = sel.get_pixel_rgn(box["x"], box["y"], box["width"], box["height"], False, False)
        data = bytearray(rgn[box["x"]:box["x"] + box["width"], box["y"]:box["y"] + box["height"]])
        data = host.channel_of(data, sel.bpp, 0) if sel.bpp != 1 else data
        bw = box["width"]
        for row in range(box["height"]):
            start = (box["y"] - place["y"] + row) * w + (box["x"] - place["x"])
            out[start:start + bw] = data[row * bw:(row + 1) * bw]
    host.write_png(path, w, h, out, 1)


# ------------------------------------------------------------------------------------------------ insert

def _fill_mask(image, mask, mask_png):
    """Copy the engine's 8-bit mask PNG into a layer mask, through a temporary layer GIMP loads."""
    tmp = pdb.gimp_file_load_layer(image, mask_png)
    try:
        w, h = min(tmp.width, mask.width), min(tmp.height, mask.height)
        data = tmp.get_pixel_rgn(0, 0, w, h, False, False)[0:w, 0:h]
        gray = host.channel_of(data, tmp.bpp, 0)
        rgn = mask.get_pixel_rgn(0, 0, w, h, True, False)
        rgn[0:w, 0:h] = bytes(gray)
        mask.flush()
        mask.update(0, 0, w, h)
    finally:
        pdb.gimp_item_delete(tmp)

def insert_results(image, anchor, layers, group_name=None):
    """The workflow's layers above ``anchor`` (inside a group named ``group_name`` when given), at their
    offsets, with their names, masks and parasites, in one undo group."""
    pdb.gimp_image_undo_group_start(image)
    try:
        parent, position = None, 0
        if anchor is not None:
            parent = pdb.gimp_item_get_parent(anchor)
            position = _above_earlier_results(image, anchor)
        if group_name:
            group = pdb.gimp_layer_group_new(image)
            group.name = _native(group_name)
            image.insert_layer(group, parent, position)
            group.attach_new_parasite(host.PARASITE_NAME, PARASITE_PERSISTENT, _native(u"{}"))
            parent, position = group, 0
        inserted = []
        for k, spec in enumerate(layers):
            layer = pdb.gimp_file_load_layer(image, spec.png)
            layer.name = _native(spec.name)
            image.insert_layer(layer, parent, position + k)
            layer.set_offsets(spec.x, spec.y)
            layer.visible = bool(getattr(spec, "visible", True))
            if spec.mask == "selection":
                layer.add_mask(layer.create_mask(ADD_SELECTION_MASK))
            elif spec.mask == "engine" and spec.mask_png:
                mask = layer.create_mask(ADD_WHITE_MASK)
                layer.add_mask(mask)
                _fill_mask(image, mask, spec.mask_png)
            layer.attach_new_parasite(host.PARASITE_NAME, PARASITE_PERSISTENT, _native(spec.parasite))
            inserted.append(layer)
        return inserted
    finally:
        pdb.gimp_image_undo_group_end(image)


def _is_result(item):
    return item.parasite_find(host.PARASITE_NAME) is not None


def _siblings(image, item):
    parent = pdb.gimp_item_get_parent(item)
    return list(parent.children) if parent is not None else list(image.layers)


def _above_earlier_results(image, anchor):
    return flow.position_above_results(_siblings(image, anchor), anchor, _is_result)


def _layer_of_results(image, group):
    return flow.layer_of_results(_siblings(image, group), group, _is_result)


# ---------------------------------------------------------------------------------------------- adapter

class Gimp2(object):
    """What the one workflow (gimp_openai_workflow) needs from GIMP 2.10."""

    #: the Settings dialog opens with what the engine has on file (seeded by _run before gimpfu's dialog)
    shows_saved_settings = True

    @property
    def interactive(self):
        return _interactive()

    def target(self, image, drawable):
        if image is None or drawable is None:
            return flow.Target(image, None, u"", kind="none")
        if pdb.gimp_item_is_layer_mask(drawable):  # the result's mask after a run: work on its layer
            drawable = pdb.gimp_layer_from_mask(drawable)
        if pdb.gimp_item_is_layer(drawable) and pdb.gimp_item_is_group(drawable) and _is_result(drawable):
            drawable = _layer_of_results(image, drawable) or drawable  # results of n > 1: their layer
        if drawable is None or not pdb.gimp_item_is_layer(drawable):
            kind = "channel"
        elif pdb.gimp_item_is_group(drawable):
            kind = "group"
        else:
            kind = "layer"
        indexed = pdb.gimp_image_base_type(image) == INDEXED or (kind == "layer" and
                                                                 pdb.gimp_drawable_is_indexed(drawable))
        non_empty, x1, y1, x2, y2 = pdb.gimp_selection_bounds(image)
        selection = _rect(x1, y1, x2 - x1, y2 - y1) if non_empty else None
        return flow.Target(image, drawable, _image_label(image), kind=kind,
                           layer_rect=_layer_rect(drawable) if kind != "channel" else None,
                           selection=selection, indexed=indexed)

    def open_targets(self):
        return [self.target(img, img.active_layer) for img in gimp.image_list()]

    def export_region(self, target, place, path):
        export_region(target.layer, place, path)

    def export_selection(self, target, place, path):
        export_selection(target.image, place, path)

    def insert(self, image, anchor, layers, group_name):
        return insert_results(image, anchor, layers, group_name)

    def alive(self, image, layer):
        return bool(pdb.gimp_image_is_valid(image)) and (layer is None or bool(pdb.gimp_item_is_valid(layer)))

    def new_image(self, width, height):
        return gimp.Image(width, height, RGB)

    def image_size(self, image):
        return image.width, image.height

    def show(self, image):
        gimp.Display(image)

    def ask(self, question, title=u"OpenAI", yes=u"_Yes"):
        return _ask(question)

    def ask_secret(self, question):
        return _ask_secret(question)

    def progress(self, fraction, message):
        gimp.progress_update(max(0.0, min(1.0, fraction)))
        if message:
            pdb.gimp_progress_set_text(_native(message))

    def status(self, text):
        pdb.gimp_progress_set_text(_native(text))

    def models_listed(self, models):
        pass

    def keep_workdir(self, path):
        return False


def _handler(proc):
    def handle(image, drawable, args):
        workflow = flow.Workflow(Gimp2(), proc, args, python=host.find_engine_python(SUPPORT_DIRS),
                                 secrets=_secrets())
        text = workflow.run(image, drawable)
        if text and workflow.only_cost:  # nothing to read but the cost: the status text, not a message box
            pdb.gimp_progress_set_text(_native(text))
        elif text:
            gimp.message(_native(text))
        return text
    return handle


if __name__ == "__main__":
    register_all()
    main()
