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


#: A float whose range holds more steps than this gets a plain number entry (PF_FLOAT) instead of gimpfu's
#: slider: dragging a slider of 0 to 100,000 in steps of 0.05 moves hundreds of dollars a pixel, and its
#: arrows take 20 clicks a dollar (the cost limit). The range is checked when the run starts (the workflow).
SLIDER_MAX_STEPS = 10000


def pf_type(p):
    """The gimpfu widget of one manifest parameter."""
    if p["type"] == "float" and (p["max"] - p["min"]) / p["step"] > SLIDER_MAX_STEPS:
        return gimpfu.PF_FLOAT
    return PF_FOR_TYPE[p["type"]]


def pf_params(proc):
    """gimpfu parameter tuples for one manifest procedure (image and drawable first when it takes them)."""
    params = []
    if proc.get("image_params"):
        params.append((gimpfu.PF_IMAGE, "image", "Input image", None))
        params.append((gimpfu.PF_DRAWABLE, "drawable", "Input drawable", None))
    for p in host.public_params(proc):
        pf = pf_type(p)
        entry = [pf, str(p["name"]), _native(dialog_label(p)), p["default"]]
        if pf in (gimpfu.PF_SPINNER, gimpfu.PF_SLIDER):
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
    """Register every manifest procedure with gimpfu, under the manifest's GIMP 2 menu, flat: GIMP 2.10 lists
    a menu's entries sorted by their label (plug_in_menus_setup and plug_in_menus_tree_insert in
    app/menus/plug-in-menus.c, a g_utf8_collate_key of path + label) and takes a menu path literally, so the
    manifest's sections cannot order it; a section as a submenu would sit above the entries (the only separator
    GIMP 2.10 draws in a plug-in's menu follows its submenus, plug_in_menus_build_path), results before the
    actions and Settings still among them."""
    manifest = manifest or host.load_manifest(host.find_manifest(SUPPORT_DIRS))
    for proc in manifest["procedures"]:
        _PROCS[str(proc["name"])] = proc
        gimpfu.register(str(proc["name"]), _native(proc["blurb"]), _native(proc["help"]),
                        _native(manifest["author"]), _native(manifest["copyright"]), str(manifest["date"]),
                        _native(proc.get("gimp2_label") or proc["label"]), str(proc["image_types"]),
                        pf_params(proc), [],
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
        if not any(p.get("dialog", True) for p in host.public_params(proc)) and host.public_params(proc):
            # every argument is for scripts only (Keep Visible Result): no dialog of one hidden field; the
            # run is still interactive (_RUN), with the manifest's defaults
            lead = list(params[1:3]) if proc.get("image_params") else []
            return _registered_function(proc_name)(*(lead + [p["default"] for p in host.public_params(proc)]))
    return gimpfu._run(proc_name, params)


def _registered_function(proc_name):
    return gimpfu._registered_plugins_[proc_name][10]


def _before_dialog(proc, image, drawable):
    """{name: value} to show in the dialog, or None when the run cannot happen (the workflow says why)."""
    if proc["operation"] == "settings":
        saved = host.saved_settings(python=host.find_engine_python(SUPPORT_DIRS)) or {}
        values = {"base_url": saved.get("base_url") or u"", "default_model": saved.get("default_model") or u"",
                  "history_folder": saved.get("history_dir") or u"", "change_key": False}
        if isinstance(saved.get("max_cost"), (int, float)):
            values["max_cost"] = min(100000.0, max(0.0, float(saved["max_cost"])))
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
    """Write ``place`` (image coordinates) of the layer as an 8-bit RGBA PNG, transparent where it runs past
    the layer (an edit's selection may; pixel regions only read inside the layer, so the rest is padded)."""
    ox, oy = layer.offsets
    w, h = place["width"], place["height"]
    inside = flow.intersect(place, _rect(ox, oy, layer.width, layer.height))
    lx, ly, iw, ih = inside["x"] - ox, inside["y"] - oy, inside["width"], inside["height"]
    if inside == place:
        rgn = layer.get_pixel_rgn(lx, ly, w, h, False, False)
        host.write_png(path, w, h, host.to_rgba(rgn[lx:lx + w, ly:ly + h], layer.bpp), 4)
        return
    out = bytearray(w * h * 4)
    if iw and ih:
        rgn = layer.get_pixel_rgn(lx, ly, iw, ih, False, False)
        data = host.to_rgba(rgn[lx:lx + iw, ly:ly + ih], layer.bpp)
        for row in range(ih):
            start = ((inside["y"] - place["y"] + row) * w + (inside["x"] - place["x"])) * 4
            out[start:start + iw * 4] = data[row * iw * 4:(row + 1) * iw * 4]
    host.write_png(path, w, h, out, 4)


def _read_rgba(drawable):
    rgn = drawable.get_pixel_rgn(0, 0, drawable.width, drawable.height, False, False)
    return host.to_rgba(rgn[0:drawable.width, 0:drawable.height], drawable.bpp)


def reference_layers(image, exclude):
    """[(name, layer)]: the layers named ``ref:...`` in ``image`` first, then in the other open images (groups
    searched, not taken); hidden ones count."""
    found = []
    images = [image] + [im for im in gimp.image_list() if im.ID != image.ID]
    for im in images:
        for layer in _all_layers(im.layers):
            if pdb.gimp_item_is_group(layer) or (exclude is not None and layer.ID == exclude.ID):
                continue
            name = host.to_text(pdb.gimp_item_get_name(layer))
            if name.strip().lower().startswith(flow.REFERENCE_PREFIX):
                found.append((name if im.ID == image.ID else u"%s (%s)" % (name, _image_label(im)), layer))
    return found


def export_reference(layer, max_width, max_height, path):
    """The layer scaled down (never up) to fit the size, in a temporary image (GIMP 2.10 reads no scaled
    pixels): a copy is scaled there, read and the image deleted; nothing of the artist's image changes."""
    w, h = layer.width, layer.height
    scale = min(1.0, float(max_width) / w, float(max_height) / h)
    if scale >= 1.0:
        host.write_png(path, w, h, _read_rgba(layer), 4)
        return
    sw, sh = max(1, int(w * scale)), max(1, int(h * scale))
    base = pdb.gimp_image_base_type(layer.image)
    tmp = pdb.gimp_image_new(w, h, base if base != INDEXED else RGB)
    try:
        pdb.gimp_image_undo_disable(tmp)
        copy = pdb.gimp_layer_new_from_drawable(layer, tmp)
        tmp.insert_layer(copy, None, 0)
        pdb.gimp_layer_scale(copy, sw, sh, False)
        host.write_png(path, copy.width, copy.height, _read_rgba(copy), 4)
    finally:
        pdb.gimp_image_delete(tmp)


def export_visible(image, path):
    """The canvas as it shows (every visible layer) as an RGBA PNG; the layer made from it is never inserted."""
    visible = pdb.gimp_layer_new_from_visible(image, image, "gimp-openai visible")
    try:
        host.write_png(path, visible.width, visible.height, _read_rgba(visible), 4)
    finally:
        pdb.gimp_item_delete(visible)


def expand_canvas(image, width, height, dx, dy, spec):
    """The canvas resized (layers move with the picture and keep their size: the new area is transparent) and
    the painted layer on top with its mask, in ONE undo group (insert_results' group nests in it)."""
    pdb.gimp_image_undo_group_start(image)
    try:
        pdb.gimp_image_resize(image, width, height, dx, dy)
        return insert_results(image, None, [spec])[0]
    finally:
        pdb.gimp_image_undo_group_end(image)


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


# ----------------------------------------------------------------------------------------------- preview

def _is_preview(item):
    return item.parasite_find(host.PREVIEW_PARASITE) is not None


def _all_layers(layers):
    found = []
    for layer in layers:
        found.append(layer)
        if pdb.gimp_item_is_group(layer):
            found.extend(_all_layers(layer.children))
    return found


class _Unrecorded(object):
    """Changes to an image that are not the artist's: undo frozen (gimp-image-undo-freeze is meant for in-situ
    previews; undo-disable would throw the artist's whole history away), the dirty state as it was (a clean
    image stays clean) and the active layer as it was (inserting a layer activates it)."""

    def __init__(self, image):
        self.image = image

    def __enter__(self):
        self.dirty = bool(pdb.gimp_image_is_dirty(self.image))
        self.active = self.image.active_layer
        pdb.gimp_image_undo_freeze(self.image)
        return self

    def __exit__(self, *exc):
        try:
            if self.active is not None and pdb.gimp_item_is_valid(self.active):
                pdb.gimp_image_set_active_layer(self.image, self.active)
            if not self.dirty:
                pdb.gimp_image_clean_all(self.image)
        finally:
            pdb.gimp_image_undo_thaw(self.image)
        return False


def show_preview(image, above, spec, layer=None):
    """The preview's pixels in ``layer`` (the one shown so far, when still there and of the same size: only its
    pixels change) or in a new layer above ``above`` (where the result will go; on top when None), with the
    engine's layer mask. GIMP loads the PNG (any image type); returns the preview layer."""
    with _Unrecorded(image):
        loaded = pdb.gimp_file_load_layer(image, spec.png)
        same = (layer is not None and pdb.gimp_item_is_valid(layer) and
                (layer.width, layer.height) == (loaded.width, loaded.height) and layer.bpp == loaded.bpp)
        if same:  # the newer preview's pixels into the layer shown, in place
            w, h = loaded.width, loaded.height
            data = loaded.get_pixel_rgn(0, 0, w, h, False, False)[0:w, 0:h]
            rgn = layer.get_pixel_rgn(0, 0, w, h, True, False)
            rgn[0:w, 0:h] = data
            layer.flush()
            pdb.gimp_item_delete(loaded)
            if tuple(layer.offsets) != (spec.x, spec.y):
                layer.set_offsets(spec.x, spec.y)
            layer.update(0, 0, w, h)
            return layer
        if layer is not None and pdb.gimp_item_is_valid(layer):
            image.remove_layer(layer)
        layer = loaded
        layer.name = _native(spec.name)
        parent, position = None, 0
        if above is not None:
            parent = pdb.gimp_item_get_parent(above)
            position = _above_earlier_results(image, above)
        image.insert_layer(layer, parent, position)
        layer.set_offsets(spec.x, spec.y)
        if spec.mask == "engine" and spec.mask_png:
            mask = layer.create_mask(ADD_WHITE_MASK)
            layer.add_mask(mask)
            _fill_mask(image, mask, spec.mask_png)
        layer.attach_new_parasite(host.PREVIEW_PARASITE, PARASITE_PERSISTENT, _native(spec.parasite))
        return layer


def remove_previews(image):
    """Every preview layer in the image (this run's, or one a killed run left), removed unrecorded."""
    found = [layer for layer in _all_layers(image.layers) if _is_preview(layer)]
    if found:
        with _Unrecorded(image):
            for layer in found:
                if pdb.gimp_item_is_valid(layer):
                    image.remove_layer(layer)
    return len(found)


def _siblings(image, item):
    parent = pdb.gimp_item_get_parent(item)
    return list(parent.children) if parent is not None else list(image.layers)


def _above_earlier_results(image, anchor):
    return flow.position_above_results(_siblings(image, anchor), anchor, _is_result)


def _layer_of_results(image, group):
    return flow.layer_of_results(_siblings(image, group), group, _is_result)


def result_group(image, drawable):
    """(group, its layers top first) when ``drawable`` is a group of results, or a layer (or mask) in one."""
    if drawable is None:
        return None
    if pdb.gimp_item_is_layer_mask(drawable):
        drawable = pdb.gimp_layer_from_mask(drawable)
    if not pdb.gimp_item_is_layer(drawable):
        return None
    group = drawable if pdb.gimp_item_is_group(drawable) else pdb.gimp_item_get_parent(drawable)
    if group is None or not _is_result(group):
        return None
    return group, list(group.children)


def show_only(image, layers, index):
    pdb.gimp_image_undo_group_start(image)
    try:
        for k, layer in enumerate(layers):
            pdb.gimp_item_set_visible(layer, k == index)
        pdb.gimp_image_set_active_layer(image, layers[index])
    finally:
        pdb.gimp_image_undo_group_end(image)


def keep_result(image, group, layer):
    """``layer`` takes the group's place (its mask and parasite go with it) and the group, with the other
    results, is removed: one undo step."""
    pdb.gimp_image_undo_group_start(image)
    try:
        parent = pdb.gimp_item_get_parent(group)
        position = pdb.gimp_image_get_item_position(image, group)
        pdb.gimp_image_reorder_item(image, layer, parent, position)
        pdb.gimp_item_set_visible(layer, True)
        pdb.gimp_image_remove_layer(image, group)
        pdb.gimp_image_set_active_layer(image, layer)
    finally:
        pdb.gimp_image_undo_group_end(image)


# ---------------------------------------------------------------------------------------------- adapter

class Gimp2(object):
    """What the one workflow (gimp_openai_workflow) needs from GIMP 2.10."""

    #: the Settings dialog opens with what the engine has on file (seeded by _run before gimpfu's dialog)
    shows_saved_settings = True

    def __init__(self):
        self.previews = {}  # image ID -> the preview layer shown

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
        elif pdb.gimp_item_is_layer(drawable) and _is_preview(drawable):  # a killed run's preview, clicked
            drawable = flow.layer_of_results(_siblings(image, drawable), drawable,
                                             lambda la: _is_result(la) or _is_preview(la)) or drawable
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

    def reference_layers(self, image, exclude):
        return reference_layers(image, exclude)

    def export_reference(self, layer, max_width, max_height, path):
        export_reference(layer, max_width, max_height, path)

    def export_visible(self, image, path):
        export_visible(image, path)

    def expand_canvas(self, image, width, height, dx, dy, spec):
        return expand_canvas(image, width, height, dx, dy, spec)

    def insert(self, image, anchor, layers, group_name):
        return insert_results(image, anchor, layers, group_name)

    def alive(self, image, layer):
        return bool(pdb.gimp_image_is_valid(image)) and (layer is None or bool(pdb.gimp_item_is_valid(layer)))

    def preview(self, target, spec):
        image = target.image
        self.previews[image.ID] = show_preview(image, target.layer, spec, self.previews.get(image.ID))
        gimp.displays_flush()

    def end_preview(self, target):
        self.previews.pop(target.image.ID, None)
        if remove_previews(target.image):
            gimp.displays_flush()

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

    def end_progress(self):
        """GIMP disconnects its Cancel from the plug-in when the progress ends."""
        try:
            pdb.gimp_progress_end()
        except Exception:  # noqa: S110 - no progress to end (no display)
            pass

    def models_listed(self, models):
        pass

    def keep_workdir(self, path):
        return False

    # picking among results (gimpfu has no custom dialogs: Show Next Result steps, Keep Visible Result keeps)
    def result_group(self, image, drawable):
        return result_group(image, drawable)

    def is_visible(self, layer):
        return bool(pdb.gimp_item_get_visible(layer))

    def layer_label(self, layer):
        return host.to_text(pdb.gimp_item_get_name(layer))

    def show_only(self, image, layers, index):
        show_only(image, layers, index)

    def keep_result(self, image, group, layer):
        keep_result(image, group, layer)


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
