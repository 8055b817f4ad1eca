#!/usr/bin/env python2
# -*- coding: utf-8 -*-
"""GIMP 2.10 host of gimp-openai: Filters > OpenAI > Edit Selection, Variations, Generate, Batch, Settings.

A thin host. GIMP 2.10 runs plug-ins under its bundled Python 2.7, so this file is Python 2.7 (and imports
under Python 3 for the tests), uses only the standard library and gimpfu, and leaves all the work to the engine
(``python3 -m gimp_openai plan|job``, see docs/architecture.md) through plugin/hostlib/gimp_openai_host.py.
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

import gimp  # noqa: E402
import gimpfu  # noqa: E402
import gimp_openai_host as host  # noqa: E402
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


class Stop(Exception):
    """The artist declined (no selection, said no): nothing to do, nothing to report as an error."""


# ---------------------------------------------------------------------------------------- registration

def pf_params(proc):
    """gimpfu parameter tuples for one manifest procedure (image and drawable first when it takes them)."""
    params = []
    if proc.get("image_params"):
        params.append((gimpfu.PF_IMAGE, "image", "Input image", None))
        params.append((gimpfu.PF_DRAWABLE, "drawable", "Input drawable", None))
    for p in host.public_params(proc):
        pf = PF_FOR_TYPE[p["type"]]
        entry = [pf, str(p["name"]), _native(p["label"]), p["default"]]
        if p["type"] in ("int", "float"):
            entry.append((p["min"], p["max"], p["step"]))
        elif p["type"] == "choice":
            entry.append(tuple((_native(v), _native(v)) for v in p["values"]))
        if p["type"] in ("string", "text", "dirname", "choice"):
            entry[3] = _native(p["default"])
        params.append(tuple(entry))
    return params


def register_all(manifest=None):
    """Register every manifest procedure with gimpfu, under the manifest's GIMP 2 menu."""
    manifest = manifest or host.load_manifest(host.find_manifest(SUPPORT_DIRS))
    for proc in manifest["procedures"]:
        gimpfu.register(str(proc["name"]), _native(proc["blurb"]), _native(proc["help"]),
                        _native(manifest["author"]), _native(manifest["copyright"]), str(manifest["date"]),
                        _native(proc["label"]), str(proc["image_types"]), pf_params(proc), [],
                        _runner(proc), menu=str(manifest["menu"]["gimp2"]))
    return manifest


def _runner(proc):
    """The function gimpfu calls: positional PDB arguments -> a dict, then the operation, guarded."""
    names = [p["name"] for p in host.public_params(proc)]
    handler = HANDLERS[proc["operation"]]

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
        return _guarded(image, lambda: handler(image, drawable, args))
    run.__name__ = str(proc["name"].replace("-", "_"))
    return run


def _run(proc_name, params):
    """Our gimp.main run function: remember the run mode, then let gimpfu do the rest (dialog, shelf)."""
    _RUN["mode"] = params[0]
    return gimpfu._run(proc_name, params)


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
    key = os.environ.get(host.KEY_ENV)
    return [key] if key else []


def _guarded(image, body):
    """One operation: context push/pop, one undo group, display flush, and errors as plain messages.

    Non-interactive callers also get the failure (RuntimeError), as any failing PDB call gives them.
    """
    pdb.gimp_context_push()
    if image is not None:
        pdb.gimp_image_undo_group_start(image)
    try:
        return body()
    except Stop as stop:
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
        if image is not None:
            pdb.gimp_image_undo_group_end(image)
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


def _intersect(a, b):
    x1, y1 = max(a["x"], b["x"]), max(a["y"], b["y"])
    x2 = min(a["x"] + a["width"], b["x"] + b["width"])
    y2 = min(a["y"] + a["height"], b["y"] + b["height"])
    return _rect(x1, y1, max(0, x2 - x1), max(0, y2 - y1))


def _layer_rect(layer):
    x, y = layer.offsets
    return _rect(x, y, layer.width, layer.height)


def _image_label(image):
    name = pdb.gimp_image_get_filename(image) or getattr(image, "name", None) or "Untitled"
    return u"%s (#%s)" % (os.path.basename(host.to_text(name)), getattr(image, "ID", "?"))


def check_layer(image, drawable):
    """The layer to work on, or a HostError that says what is wrong and what to do."""
    if image is None or drawable is None:
        raise host.HostError(u"There is no active layer.", u"Open an image and click a layer, then run again.",
                             "no_layer")
    if pdb.gimp_item_is_layer_mask(drawable) or not pdb.gimp_item_is_layer(drawable):
        raise host.HostError(u"The active drawable is a mask or a channel, not a layer.",
                             u"Click the layer's thumbnail (not its mask) in the Layers dialog, then run again.",
                             "not_a_layer")
    if pdb.gimp_item_is_group(drawable):
        raise host.HostError(u"'%s' is a layer group; the plug-in does not edit groups." %
                             host.to_text(drawable.name),
                             u"Pick a layer inside the group, or merge the group (Layer > Merge Down), then run "
                             u"again.", "layer_group")
    if pdb.gimp_image_base_type(image) == INDEXED or pdb.gimp_drawable_is_indexed(drawable):
        raise host.HostError(u"This image is indexed (a limited palette); the models work in full colour.",
                             u"Convert it with Image > Mode > RGB, run again, and convert back if you need to.",
                             "indexed_image")
    return drawable


def selection_region(image, layer, whole_layer, operation):
    """(bounds, whole) for this layer: the selection's box inside the layer, or the whole layer.

    No selection: the whole layer when asked (argument, or yes to the question in an interactive run), else a
    clear stop. A selection that misses the layer is an error, not an empty request.
    """
    layer_box = _layer_rect(layer)
    non_empty, x1, y1, x2, y2 = pdb.gimp_selection_bounds(image)
    if not non_empty:
        if whole_layer:
            return layer_box, True
        if _interactive():
            if _ask(u"Nothing is selected. Use the whole layer '%s' (%dx%d px)? A larger area costs more." %
                    (host.to_text(layer.name), layer.width, layer.height)):
                return layer_box, True
            raise Stop(u"Nothing was changed: select the area to change (e.g. with the Ellipse Select tool) "
                       u"and run again.")
        raise host.HostError(u"There is no selection, so there is nothing to %s." %
                             (u"edit" if operation == "edit" else u"vary"),
                             u"Select the area first, or pass whole_layer=TRUE to use the whole layer.",
                             "no_selection")
    bounds = _intersect(_rect(x1, y1, x2 - x1, y2 - y1), layer_box)
    if bounds["width"] == 0 or bounds["height"] == 0:
        raise host.HostError(u"The selection does not touch the active layer '%s'." % host.to_text(layer.name),
                             u"Select inside the layer, or click the layer under the selection, then run again.",
                             "selection_outside_layer")
    return bounds, False


# ------------------------------------------------------------------------------------------------ export

def export_region(layer, place, path):
    """Write ``place`` (image coordinates, inside the layer) of the layer as an 8-bit RGBA PNG."""
    ox, oy = layer.offsets
    lx, ly, w, h = place["x"] - ox, place["y"] - oy, place["width"], place["height"]
    rgn = layer.get_pixel_rgn(lx, ly, w, h, False, False)
    host.write_png(path, w, h, host.to_rgba(rgn[lx:lx + w, ly:ly + h], layer.bpp), 4)


def export_selection(image, place, path, whole):
    """Write the selection inside ``place`` as an 8-bit gray PNG; off-canvas parts are unselected
    (GIMP's selection only covers the canvas), and ``whole`` means everything is selected."""
    w, h = place["width"], place["height"]
    if whole:
        host.write_png(path, w, h, b"\xff" * (w * h), 1)
        return
    out = bytearray(w * h)
    box = _intersect(place, _rect(0, 0, image.width, image.height))
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


def insert_results(image, anchor, outputs, prompt, model, add_mask, mask_from="engine", group_label=None):
    """Each output as a layer above ``anchor`` (a group of them when more than one), at its offsets,
    named ``OpenAI: <prompt> (k/n)``, with a layer mask and a parasite recording prompt, model, request id."""
    parent, position = None, 0
    if anchor is not None:
        parent = pdb.gimp_item_get_parent(anchor)
        position = pdb.gimp_image_get_item_position(image, anchor)
    count = len(outputs)
    if count > 1:
        group = pdb.gimp_layer_group_new(image)
        group.name = _native(group_label or host.layer_name(prompt, 1, count).rsplit(u" (", 1)[0] +
                             u" (%d results)" % count)
        image.insert_layer(group, parent, position)
        parent, position = group, 0
    layers = []
    for k, out in enumerate(sorted(outputs, key=lambda o: o.get("index", 0)), 1):
        layer = pdb.gimp_file_load_layer(image, out["layer_png"])
        layer.name = _native(host.layer_name(prompt, k, count, path=out.get("path"), secrets=_secrets()))
        image.insert_layer(layer, parent, position + k - 1)
        layer.set_offsets(int(out["x"]), int(out["y"]))
        if add_mask:
            if mask_from == "selection":
                layer.add_mask(layer.create_mask(ADD_SELECTION_MASK))
            elif out.get("mask_png"):
                mask = layer.create_mask(ADD_WHITE_MASK)
                layer.add_mask(mask)
                _fill_mask(image, mask, out["mask_png"])
        layer.attach_new_parasite(host.PARASITE_NAME, PARASITE_PERSISTENT,
                                  _native(host.parasite_data(prompt, model, out, _secrets())))
        layers.append(layer)
    return layers


# ---------------------------------------------------------------------------------------------- progress

def _progress(fraction, message):
    gimp.progress_update(max(0.0, min(1.0, fraction)))
    if message:
        pdb.gimp_progress_set_text(_native(message))


def _job_options(args, operation):
    """The JOB.json options shared by single and batch runs."""
    job = {"operation": operation, "model": host.to_text(args.get("model", "")), "n": int(args.get("n", 1)),
           "quality": args.get("quality", "auto"), "size_mode": args.get("size_mode", "auto"),
           "background": args.get("background", "auto"), "feather": float(args.get("feather", 0.0)),
           "context_padding": float(args.get("context_padding", 0.25)), "align": bool(args.get("align", True)),
           "tone_match": bool(args.get("tone_match", True)), "blend": args.get("blend", "feather"),
           "add_mask": bool(args.get("add_mask", True)), "out_dir": "out"}
    if operation == "edit":
        job["prompt"] = host.to_text(args.get("prompt", ""))
    if operation == "variation":
        job["variation_prompt"] = host.to_text(args.get("variation_prompt", ""))
        job["add_mask"] = True  # the raw variation; the host masks it with the selection when asked
    return job


# -------------------------------------------------------------------------------------- the procedures

def _prepare_item(image, layer, item_id, whole_layer, operation):
    bounds, whole = selection_region(image, layer, whole_layer, operation)
    return {"id": item_id, "image_obj": image, "layer_obj": layer, "whole": whole,
            "plan": {"id": item_id, "layer": _layer_rect(layer), "selection_bounds": bounds}}


def _run_items(prepared, args, operation, title):
    """Plan, export, run one job for every prepared item; returns (result, planned model, workdir)."""
    python = host.find_engine_python(SUPPORT_DIRS)
    workdir = host.make_workdir()
    try:
        answer = host.plan({"operation": operation, "model": host.to_text(args.get("model", "")),
                            "size_mode": args.get("size_mode", "auto"),
                            "context_padding": float(args.get("context_padding", 0.25)),
                            "items": [p["plan"] for p in prepared]}, workdir, python=python)
        planned = dict((i["id"], i) for i in answer["items"])
        job = _job_options(args, operation)
        job["model"] = answer.get("model") or job["model"]
        job["concurrency"] = int(args.get("concurrency", 4))
        job["source_name"] = host.to_text(os.path.basename(host.to_text(
            pdb.gimp_image_get_filename(prepared[0]["image_obj"]) or u"untitled"))) if prepared else u""
        job["items"] = []
        for p in prepared:
            region = planned[p["id"]]
            item = {"id": p["id"], "image": p["id"] + ".png", "layer": p["plan"]["layer"],
                    "place": region["place"], "request": region["request"], "target": region["target"]}
            export_region(p["layer_obj"], region["place"], os.path.join(workdir, item["image"]))
            if operation == "edit":
                item["selection"] = p["id"] + "-sel.png"
                export_selection(p["image_obj"], region["place"], os.path.join(workdir, item["selection"]),
                                 p["whole"])
            job["items"].append(item)
        gimp.progress_init(_native(title))
        result = host.run_job(job, workdir, python=python, on_progress=_progress)
        return result, job["model"], workdir
    except BaseException:
        host.cleanup(workdir)
        raise


def edit_selection(image, drawable, args):
    return _single(image, drawable, args, "edit")


def variations(image, drawable, args):
    return _single(image, drawable, args, "variation")


def _switch_model(error, retried):
    """Issue 9 part 3: a job failed because its model is gone (``model_not_found`` with a live ``replacement``).
    Interactive runs are asked whether to switch; yes -> remembered as the default model (``config set``) and
    the replacement returned, so the caller runs the job once more with it. Otherwise None, and the caller
    fails with the engine's text, which names the model and its replacement."""
    error = error or {}
    replacement = host.clean_line(error.get("replacement") or u"")
    if retried or error.get("code") != "model_not_found" or not replacement or not _interactive():
        return None
    question = u"%s\n\nSwitch to %s for this run, and remember it as your default model?" % (
        host.clean_line(error.get("message") or u"", _secrets()), replacement)
    if not _ask(question):
        return None
    try:
        host.save_settings({"default_model": replacement}, python=host.find_engine_python(SUPPORT_DIRS))
    except host.HostError as exc:  # still run with it now; say why it is not remembered
        gimp.message(_native(u"%s will be used now but could not be remembered: %s" % (replacement, exc.message)))
    return replacement


def _single(image, drawable, args, operation, retried=False):
    layer = check_layer(image, drawable)
    if operation == "edit" and not host.clean_line(args.get("prompt", "")):
        raise host.HostError(u"The prompt is empty.", u"Describe what the selection should become.",
                             "empty_prompt")
    prepared = [_prepare_item(image, layer, "img-1", bool(args.get("whole_layer")), operation)]
    title = u"OpenAI: editing the selection" if operation == "edit" else u"OpenAI: making variations"
    result, model, workdir = _run_items(prepared, args, operation, title)
    try:
        item = (result.get("items") or [{}])[0]
        if not item.get("ok"):
            error = item.get("error") or result.get("error")
            replacement = _switch_model(error, retried)
            if replacement:
                return _single(image, drawable, dict(args, model=replacement), operation, retried=True)
            raise host.HostError.from_engine(error)
        prompt = args.get("prompt", "") if operation == "edit" else u"variation"
        mask_from = "engine" if operation == "edit" else "selection"
        add_mask = bool(args.get("add_mask", True)) and (operation == "edit" or not prepared[0]["whole"])
        outputs = item.get("outputs") or []
        layers = insert_results(image, layer, outputs, prompt, item.get("model") or model, add_mask, mask_from)
        gimp.progress_update(1.0)
        report = host.reports_text(outputs, _secrets())
        if report:  # what alignment/tone match corrected: in the status bar now, on the layer's parasite after
            pdb.gimp_progress_set_text(_native(report))
        _show_warnings(result)
        return layers
    finally:
        host.cleanup(workdir)


def _show_warnings(result):
    """Paid images that went to a rescue folder (history full or unwritable): the artist must learn where."""
    text = host.warnings_text(result, _secrets())
    if text:
        gimp.message(_native(text))


def generate(image, drawable, args, retried=False):
    if not host.clean_line(args.get("prompt", "")):
        raise host.HostError(u"The prompt is empty.", u"Describe the image to generate.", "empty_prompt")
    new_image = args.get("target") == "new image" or image is None or \
        pdb.gimp_image_base_type(image) == INDEXED
    python = host.find_engine_python(SUPPORT_DIRS)
    workdir = host.make_workdir()
    try:
        job = {"operation": "generate", "model": host.to_text(args.get("model", "")), "n": int(args["n"]),
               "prompt": host.to_text(args["prompt"]), "quality": args.get("quality", "auto"),
               "size": args.get("size", "auto"), "background": args.get("background", "auto"),
               "add_mask": False, "out_dir": "out", "items": []}
        gimp.progress_init(_native(u"OpenAI: generating"))
        result = host.run_job(job, workdir, python=python, on_progress=_progress)
        item = (result.get("items") or [{}])[0]
        if not item.get("ok"):
            error = item.get("error") or result.get("error")
            replacement = _switch_model(error, retried)
            if replacement:
                return generate(image, drawable, dict(args, model=replacement), retried=True)
            raise host.HostError.from_engine(error)
        outputs = item.get("outputs") or []
        model = item.get("model") or result.get("model") or job["model"]
        _show_warnings(result)
        if new_image:
            width = max(int(o["width"]) for o in outputs)
            height = max(int(o["height"]) for o in outputs)
            target = gimp.Image(width, height, RGB)
            pdb.gimp_image_undo_disable(target)
            for o in outputs:
                o["x"], o["y"] = 0, 0
            layers = insert_results(target, None, outputs, args["prompt"], model, False)
            pdb.gimp_image_undo_enable(target)
            gimp.Display(target)
            return layers
        for o in outputs:  # centred in the image
            o["x"] = (image.width - int(o["width"])) // 2
            o["y"] = (image.height - int(o["height"])) // 2
        anchor = drawable if drawable is not None and pdb.gimp_item_is_layer(drawable) and \
            not pdb.gimp_item_is_layer_mask(drawable) else None
        return insert_results(image, anchor, outputs, args["prompt"], model, False)
    finally:
        host.cleanup(workdir)


def batch(image, drawable, args, retried=False):
    """Every open image in one engine job; each image gets its own undo group; a summary at the end."""
    operation = args.get("batch_operation", "edit")
    if operation == "edit" and not host.clean_line(args.get("prompt", "")):
        raise host.HostError(u"The prompt is empty.", u"Describe what each selection should become.",
                             "empty_prompt")
    prepared, skipped, names = [], [], {}
    for number, img in enumerate(gimp.image_list(), 1):
        label = _image_label(img)
        try:
            layer = check_layer(img, img.active_layer)
            empty = not pdb.gimp_selection_bounds(img)[0]
            if empty and args.get("no_selection") == "skip":
                skipped.append(u"\u2013 %s: skipped (nothing selected)" % label)
                continue
            item_id = u"img-%d" % number
            # whole_layer=empty: an image without a selection was chosen to go whole, so no question is asked
            prepared.append(_prepare_item(img, layer, item_id, empty, operation))
            names[item_id] = label
        except host.HostError as exc:
            skipped.append(u"\u2717 %s: %s" % (label, host.describe_error(exc, _secrets())))
    if not prepared:
        raise host.HostError(u"No open image can be processed.\n" + u"\n".join(skipped),
                             u"Open an RGB or grayscale image and select an area, then run again.", "nothing_to_do")
    result, model, workdir = _run_items(prepared, args, operation, u"OpenAI: batch over %d images" % len(prepared))
    try:
        gone = host.model_gone(result)
        replacement = _switch_model(gone, retried) if gone else None
        if replacement:  # every image failed only because the model is gone: the artist chose its replacement
            return batch(image, drawable, dict(args, model=replacement), retried=True)
        by_id = dict((p["id"], p) for p in prepared)
        prompt = args.get("prompt", "") if operation == "edit" else u"variation"
        for item in result.get("items") or []:
            p = by_id.get(item.get("id"))
            if p is None or not item.get("ok"):
                continue
            try:
                _insert_in_own_undo(p, item, prompt, model, args, operation)
            except Exception as exc:  # one image's failure leaves the others done
                item["ok"] = False
                item["error"] = {"message": u"The results could not be added to the image: %s" %
                                 host.to_text(exc), "hint": u"They are kept in the history folder.",
                                 "saved": [o.get("history_png") for o in item.get("outputs") or []
                                           if o.get("history_png")]}
        text = host.summary(result, names, _secrets())
        if skipped:
            text += u"\n" + u"\n".join(skipped)
        gimp.message(_native(text))
        return text
    finally:
        host.cleanup(workdir)


def _insert_in_own_undo(p, item, prompt, model, args, operation):
    img = p["image_obj"]
    pdb.gimp_image_undo_group_start(img)
    try:
        add_mask = bool(args.get("add_mask", True)) and (operation == "edit" or not p["whole"])
        insert_results(img, p["layer_obj"], item.get("outputs") or [], prompt, item.get("model") or model,
                       add_mask, "engine" if operation == "edit" else "selection")
    finally:
        pdb.gimp_image_undo_group_end(img)


def settings(image, drawable, args):
    """Save the non-secret settings, store a new key through the engine (hidden field), test the server."""
    python = host.find_engine_python(SUPPORT_DIRS)
    changes = {}
    if host.clean_line(args.get("base_url", "")):
        changes["base_url"] = host.clean_line(args["base_url"])
    if host.clean_line(args.get("default_model", "")):
        changes["default_model"] = host.clean_line(args["default_model"])
    if host.to_text(args.get("history_folder", "")).strip():
        changes["history_dir"] = host.to_text(args["history_folder"]).strip()
    lines = []
    if changes:
        host.save_settings(changes, python=python)
        lines.append(u"Settings saved: %s." % u", ".join(sorted(changes)))
    if args.get("change_key"):
        if not _interactive():
            raise host.HostError(u"The API key can only be entered interactively.",
                                 u"Run Filters > OpenAI > Settings from the menu, or run 'gimp-openai key set' "
                                 u"in a terminal.", "key_interactive_only")
        key = _ask_secret(u"Paste your OpenAI API key (it is stored in the system keyring or a private file, "
                          u"never shown):")
        if key and key.strip():
            host.store_key(key.strip(), python=python)
            lines.append(u"API key stored.")
        else:
            lines.append(u"API key unchanged.")
    if args.get("test_connection"):
        ok, text = host.test_connection(python=python)
        lines.append(host.redact(text, _secrets()))
    message = u"\n".join(lines) or u"Nothing was changed."
    gimp.message(_native(message))
    return message


HANDLERS = {"edit": edit_selection, "variation": variations, "generate": generate, "batch": batch,
            "settings": settings}


if __name__ == "__main__":
    register_all()
    main()
