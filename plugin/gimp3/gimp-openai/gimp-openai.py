#!/usr/bin/env python3
"""gimp-openai for GIMP 3.x: a thin Gimp.PlugIn host over the engine (see docs/architecture.md).

Every procedure comes from the manifest (procedures.json) through the shared host library
(gimp_openai_host.py): this file only reads pixels from GIMP, hands a plan and a job to the engine
subprocess, and puts the results back as layers, with one undo group per image.
"""

import json
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))  # the installed folder (holds the engine record)
_REAL = os.path.dirname(os.path.realpath(__file__))  # the source folder when symlinked (--dev)
for _d in (os.path.join(_REAL, os.pardir, os.pardir, "hostlib"), _REAL, _HERE):
    _d = os.path.normpath(_d)
    if os.path.isfile(os.path.join(_d, "gimp_openai_host.py")) and _d not in sys.path:
        sys.path.insert(0, _d)

import gi  # noqa: E402
import gimp_openai_host as hl  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib, GObject  # noqa: E402

PLUGIN_NAME = "gimp-openai"
_MANIFEST_DIRS = (_HERE, _REAL, os.path.join(_REAL, os.pardir, os.pardir, os.pardir))
_RW = GObject.ParamFlags.READWRITE
FORMAT = "R'G'B'A u8"  # non-linear: plain "RGBA u8" is linear light and would shift every colour
MASK_FORMAT = "Y u8"  # selections and layer masks hold coverage, not colour: no transfer curve


def load_manifest():
    return hl.load_manifest(hl.find_manifest(_MANIFEST_DIRS))


def pdb_name(param_name):
    """GObject property names use dashes; the manifest uses underscores."""
    return param_name.replace("_", "-")


def _timings_file():
    return os.environ.get("GIMP_OPENAI_HOST_TIMINGS")


def _record_timing(what, seconds, extra=None):
    path = _timings_file()
    if not path:
        return
    entry = {"what": what, "seconds": round(seconds, 4)}
    entry.update(extra or {})
    with open(path, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def _cleanup(workdir):
    """Remove the job folder; tests (GIMP_OPENAI_HOST_KEEP_WORKDIR=1) keep it to compare the inserted pixels
    with the engine's PNGs."""
    if os.environ.get("GIMP_OPENAI_HOST_KEEP_WORKDIR") == "1":
        _record_timing("workdir", 0.0, {"path": workdir})
        return
    hl.cleanup(workdir)


class Refusal(hl.HostError):
    """An input this host does not handle, said plainly with what to do instead."""

    def __init__(self, message, hint=""):
        hl.HostError.__init__(self, message, hint, "refused")


# ----------------------------------------------------------------------------------------------- registration

def _choice(values):
    choice = Gimp.Choice.new()
    for i, value in enumerate(values):
        choice.add(value, i, value, "")
    return choice


def add_params(procedure, proc):
    for p in hl.public_params(proc):
        name, label, blurb = pdb_name(p["name"]), p["label"], p.get("help", "")
        kind = p["type"]
        if kind in ("string", "text", "dirname"):
            procedure.add_string_argument(name, label, blurb, p["default"], _RW)
        elif kind == "int":
            procedure.add_int_argument(name, label, blurb, p["min"], p["max"], p["default"], _RW)
        elif kind == "float":
            procedure.add_double_argument(name, label, blurb, p["min"], p["max"], p["default"], _RW)
        elif kind == "bool":
            procedure.add_boolean_argument(name, label, blurb, p["default"], _RW)
        elif kind == "choice":
            procedure.add_choice_argument(name, label, blurb, _choice(p["values"]), p["default"], _RW)
        else:
            raise ValueError("manifest parameter {} has unknown type {}".format(p["name"], kind))


class OpenAIPlugIn(Gimp.PlugIn):
    __gtype_name__ = "GimpOpenAI"

    def do_query_procedures(self):
        return [p["name"] for p in load_manifest()["procedures"]]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        manifest = load_manifest()
        proc = hl.procedure(manifest, name)
        if proc.get("image_params"):
            procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run_image, proc)
            types = proc.get("image_types") or "*"
            procedure.set_image_types(types)
            if proc["operation"] == "generate":
                procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE |
                                               Gimp.ProcedureSensitivityMask.DRAWABLES |
                                               Gimp.ProcedureSensitivityMask.NO_DRAWABLES |
                                               Gimp.ProcedureSensitivityMask.NO_IMAGE)
            else:
                procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        else:
            procedure = Gimp.Procedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run_plain, proc)
            procedure.add_enum_argument("run-mode", "Run mode", "The run mode", Gimp.RunMode,
                                        Gimp.RunMode.NONINTERACTIVE, _RW)
        procedure.set_menu_label(proc["label"])
        procedure.add_menu_path(manifest.get("menu", {}).get("gimp3", "<Image>/Filters/OpenAI"))
        procedure.set_documentation(proc["blurb"], proc["help"], name)
        procedure.set_attribution(manifest.get("author", ""), manifest.get("copyright", ""), manifest.get("date", ""))
        add_params(procedure, proc)
        return procedure

    # ------------------------------------------------------------------------------------------------ running
    def run_image(self, procedure, run_mode, image, drawables, config, proc):
        return self._run(procedure, run_mode, config, proc, image, drawables)

    def run_plain(self, procedure, config, proc):
        run_mode = config.get_property("run-mode")
        return self._run(procedure, run_mode, config, proc, None, [])

    def _run(self, procedure, run_mode, config, proc, image, drawables):
        Gegl.init(None)
        try:
            if run_mode == Gimp.RunMode.INTERACTIVE:
                if not show_dialog(procedure, config, proc):
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            values = dict((p["name"], config.get_property(pdb_name(p["name"]))) for p in hl.public_params(proc))
            op = proc["operation"]
            if op in ("edit", "variation"):
                message = run_region(op, values, [(image, drawables)], interactive=run_mode ==
                                     Gimp.RunMode.INTERACTIVE)
            elif op == "batch":
                message = run_batch(values, run_mode == Gimp.RunMode.INTERACTIVE)
            elif op == "generate":
                message = run_generate(values, image, drawables, run_mode == Gimp.RunMode.INTERACTIVE)
            else:
                message = run_settings(values, run_mode)
            if message:
                Gimp.message(message)
            return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
        except hl.HostError as exc:
            text = "OpenAI: " + hl.describe_error(exc, _secrets())
            Gimp.message(text)
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                               GLib.Error.new_literal(Gimp.PlugIn.error_quark(), text, 0))
        except Exception as exc:  # a bug: still a message with what to do, never a traceback dialog
            import traceback
            traceback.print_exc()
            text = hl.describe_error(hl.HostError(
                f"The OpenAI plug-in failed unexpectedly: {exc.__class__.__name__}: {hl.redact(exc, _secrets())}",
                "Please report this with the steps that led to it; results already received are in the history "
                "folder (see Settings).", "internal_error"), _secrets())
            Gimp.message(text)
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                               GLib.Error.new_literal(Gimp.PlugIn.error_quark(), text, 0))
        finally:
            try:
                Gimp.progress_end()
            except Exception:  # noqa: S110 - no progress bar to end
                pass


def _secrets():
    key = os.environ.get(hl.KEY_ENV)
    return [key] if key else []


# ------------------------------------------------------------------------------------------------------ dialog

def show_dialog(procedure, config, proc):
    """GimpUi.ProcedureDialog over the procedure's arguments: prompts as multi-line text with a label above
    them (GIMP draws a text view without one) and the keyboard focus in the first, so an artist can type
    at once; choices as menus; the model as a text field completing the models the server offered."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init(PLUGIN_NAME)
    dialog = GimpUi.ProcedureDialog.new(procedure, config, proc["label"].rstrip("\u2026."))
    names, first_text = [], None
    for p in hl.public_params(proc):
        name = pdb_name(p["name"])
        if p["type"] == "text":
            view = dialog.get_widget(name, Gtk.TextView)
            view.set_wrap_mode(Gtk.WrapMode.WORD)
            view.set_size_request(420, 90)
            view.set_tooltip_text(p.get("help") or None)
            label = dialog.get_label(name + "-label", "_" + p["label"], False, True)
            label.set_xalign(0.0)
            label.set_mnemonic_widget(view)
            names.append(name + "-label")
            first_text = first_text or view
        names.append(name)
    if any(p["name"] == "model" for p in hl.public_params(proc)):
        _model_field(dialog, GimpUi, Gtk, _cached_models())
    dialog.fill(names)
    if proc["operation"] == "settings":
        dialog.set_ok_label("Save")
    if first_text is not None:
        first_text.grab_focus()
    ok = dialog.run()
    dialog.destroy()
    return ok


def _entry_of(widget, Gtk):
    """The Gtk.Entry inside what ProcedureDialog.get_widget returned (a GimpUi.LabelEntry)."""
    if isinstance(widget, Gtk.Entry):
        return widget
    get_entry = getattr(widget, "get_entry", None)
    return get_entry() if get_entry is not None else None


def _model_field(dialog, GimpUi, Gtk, models):
    """The model field: empty means automatic (said in the field); completes the models listed last time.
    A free-text field rather than a Gimp.Choice: GIMP caches registrations (pluginrc), so a choice built
    from the server's list at registration would go stale, and a model id typed by hand must stay possible."""
    # GimpUi.LabelEntry keeps the field's label (asking for a Gtk.Entry gives a bare entry without it)
    entry = _entry_of(dialog.get_widget("model", GimpUi.LabelEntry), Gtk)
    if entry is None:  # pragma: no cover - an unexpected widget: the plain field still works
        return
    entry.set_placeholder_text(("automatic: " + models[0]) if models else "automatic")
    entry.set_width_chars(24)
    if not models:
        return
    store = Gtk.ListStore(str)
    for m in models:
        store.append([m])
    completion = Gtk.EntryCompletion()
    completion.set_model(store)
    completion.set_text_column(0)
    completion.set_minimum_key_length(0)
    completion.set_inline_completion(True)
    entry.set_completion(completion)
    entry.set_tooltip_text("Models offered last time: " + ", ".join(models) + ". Empty: automatic.")


def _models_cache_path():
    return os.path.join(Gimp.directory(), "gimp-openai-models.json")


def _cached_models():
    """The image models the engine listed last time (written after each interactive run), newest first."""
    try:
        with open(_models_cache_path()) as handle:
            data = json.load(handle)
        return [str(m) for m in data.get("models", [])]
    except (OSError, ValueError, AttributeError):
        return []


# ------------------------------------------------------------------------------------------------------ pixels

def _rect(d):
    return Gegl.Rectangle.new(int(d["x"]), int(d["y"]), int(d["width"]), int(d["height"]))


def read_region(drawable, place):
    """RGBA u8 (non-linear) bytes of ``place`` (image coordinates) from a layer, whatever its precision."""
    ok, ox, oy = drawable.get_offsets()
    local = {"x": place["x"] - ox, "y": place["y"] - oy, "width": place["width"], "height": place["height"]}
    return drawable.get_buffer().get(_rect(local), 1.0, FORMAT, Gegl.AbyssPolicy.NONE)


def read_selection(image, place):
    """The selection inside ``place`` as 8-bit coverage (0 = not selected, 255 = selected)."""
    return image.get_selection().get_buffer().get(_rect(place), 1.0, MASK_FORMAT, Gegl.AbyssPolicy.NONE)


def check_drawable(image, drawables):
    """The one layer to work on, or a clear refusal."""
    if image is None:
        raise Refusal("There is no image to work on.", "Open an image first.")
    if image.get_base_type() == Gimp.ImageBaseType.INDEXED:
        raise Refusal("This image is indexed (a palette image); results would be reduced to its palette.",
                      "Convert it with Image > Mode > RGB, run the plug-in, and convert back if you need to.")
    drawables = list(drawables or [])
    if not drawables:
        layers = image.get_selected_layers()
        drawables = list(layers)
    if len(drawables) != 1:
        raise Refusal(f"{len(drawables)} layers are selected; the plug-in works on one layer at a time.",
                      "Click a single layer in the Layers dialog, then run it again.")
    drawable = drawables[0]
    if not isinstance(drawable, Gimp.Layer) or isinstance(drawable, Gimp.LayerMask):
        raise Refusal("The active item is a channel or a layer mask, not a layer.",
                      "Click the layer itself (not its mask) in the Layers dialog.")
    if drawable.is_group():
        raise Refusal("The active layer is a layer group; its pixels belong to the layers inside it.",
                      "Select one layer inside the group, or merge the group (Layer > Merge Down) first.")
    return drawable


def layer_rect(layer):
    ok, ox, oy = layer.get_offsets()
    return {"x": ox, "y": oy, "width": layer.get_width(), "height": layer.get_height()}


def selection_bounds(image, layer):
    """The selection's bounds clipped to the layer, or None when nothing of the layer is selected."""
    res = Gimp.Selection.bounds(image)
    non_empty, x1, y1, x2, y2 = res[1], res[2], res[3], res[4], res[5]
    if not non_empty:
        return None
    lr = layer_rect(layer)
    x1, y1 = max(x1, lr["x"]), max(y1, lr["y"])
    x2, y2 = min(x2, lr["x"] + lr["width"]), min(y2, lr["y"] + lr["height"])
    if x2 <= x1 or y2 <= y1:
        return False
    return {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1}


class Item:
    def __init__(self, item_id, image, layer, bounds, whole):
        self.id, self.image, self.layer, self.bounds, self.whole = item_id, image, layer, bounds, whole
        self.name = _image_name(image)


def _image_name(image):
    f = image.get_file() if image is not None else None
    if f is not None and f.get_path():
        return os.path.basename(f.get_path())
    return f"Untitled-{image.get_id()}" if image is not None else ""


def collect_item(op, image, drawables, whole_layer, item_id, interactive=False):
    layer = check_drawable(image, drawables)
    bounds = selection_bounds(image, layer)
    if bounds is False:
        raise Refusal("The selection does not touch the active layer.",
                      "Select inside the layer, or choose the layer the selection is on.")
    whole = False
    if bounds is None:
        if op == "edit" and not whole_layer:
            raise Refusal("Nothing is selected.",
                          "Select the area to repaint (e.g. with the ellipse or free select tool), or tick "
                          "'{}' to edit the whole layer.".format("Use the whole layer when nothing is selected"))
        bounds, whole = layer_rect(layer), True
    return Item(item_id, image, layer, bounds, whole)


def export_items(items, plan, workdir):
    """Write each item's planned region and its selection as PNGs; returns the job's items."""
    t0 = time.time()
    by_id = dict((a["id"], a) for a in plan["items"])
    job_items = []
    for it in items:
        answer = by_id[it.id]
        place = answer["place"]
        w, h = place["width"], place["height"]
        pixels = read_region(it.layer, place)
        image_png = f"{it.id}.png"
        hl.write_png(os.path.join(workdir, image_png), w, h, pixels, 4)
        sel_png = f"{it.id}-sel.png"
        sel = b"\xff" * (w * h) if it.whole else read_selection(it.image, place)
        hl.write_png(os.path.join(workdir, sel_png), w, h, sel, 1)
        it.place = place
        job_items.append({"id": it.id, "image": image_png, "selection": sel_png, "layer": layer_rect(it.layer),
                          "place": place, "request": answer["request"], "target": answer["target"]})
    _record_timing("export", time.time() - t0, {"items": len(items)})
    return job_items


def _progress(fraction, message):
    Gimp.progress_update(max(0.0, min(1.0, fraction)))
    if message:
        Gimp.progress_set_text(message)


def _load_layer(image, path):
    return Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(path))


_PNG_LOAD = []


def _have_png_load():
    if not _PNG_LOAD:
        _PNG_LOAD.append(Gegl.has_operation("gegl:png-load") and Gegl.has_operation("gegl:write-buffer"))
    return _PNG_LOAD[0]


def _png_into(path, buffer):
    """Decode a PNG (libpng, through GEGL) straight into ``buffer``; GEGL converts from the PNG's format
    (R'G'B'A u8 / Y' u8) to the buffer's, which is exact when they match."""
    graph = Gegl.Node.new()
    load = graph.create_child("gegl:png-load")
    load.set_property("path", path)
    write = graph.create_child("gegl:write-buffer")
    write.set_property("buffer", buffer)
    load.link(write)
    write.process()


def _result_layer(image, path, name, width, height):
    """A new layer of the image's kind holding the PNG's pixels (8-bit non-linear RGBA, converted by GEGL
    to the image's precision and mode), without going through a file plug-in."""
    if not _have_png_load():  # pragma: no cover - every GEGL 0.4 build GIMP 3 ships has png-load
        layer = _load_layer(image, path)
        layer.set_name(name)
        return layer
    gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
    kind = Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE
    layer = Gimp.Layer.new(image, name, int(width), int(height), kind, 100.0, Gimp.LayerMode.NORMAL)
    buf = layer.get_buffer()
    _png_into(path, buf)
    buf.flush()
    return layer


def _mask_bytes(path, width, height):
    """The 8-bit mask PNG's values, unchanged (decoded into a Y' u8 buffer: no curve applied)."""
    if not _have_png_load():  # pragma: no cover
        return None
    tmp = Gegl.Buffer.new("Y' u8", 0, 0, int(width), int(height))
    _png_into(path, tmp)
    return tmp.get(Gegl.Rectangle.new(0, 0, int(width), int(height)), 1.0, "Y' u8", Gegl.AbyssPolicy.NONE)


def _new_group(image, name):
    if hasattr(Gimp, "GroupLayer"):
        return Gimp.GroupLayer.new(image, name)
    return Gimp.Layer.group_new(image)  # pragma: no cover - pre-3.0 API


def insert_outputs(image, above, outputs, prompt, model, add_mask, secrets=(), mask_from="engine"):
    """Insert the engine's outputs above ``above`` at their offsets, with masks, in ONE undo group."""
    t0 = time.time()
    n = len(outputs)
    image.undo_group_start()
    try:
        parent = above.get_parent() if above is not None else None
        position = image.get_item_position(above) if above is not None else 0
        if n > 1:
            group = _new_group(image, hl.layer_name(prompt, 1, n, secrets=secrets).rsplit(" (", 1)[0]
                               + f" ({n} results)")
            image.insert_layer(group, parent, position)
            parent, position = group, 0
        inserted = []
        for k, out in enumerate(sorted(outputs, key=lambda o: o.get("index", 0)), start=1):
            name = hl.layer_name(prompt, k, n, path=out.get("path"), secrets=secrets)
            layer = _result_layer(image, out["layer_png"], name, out["width"], out["height"])
            image.insert_layer(layer, parent, position if n == 1 else len(inserted))
            layer.set_offsets(int(out["x"]), int(out["y"]))
            if add_mask and mask_from == "selection":  # variations: the selection is the mask (as in 2.10)
                layer.add_mask(layer.create_mask(Gimp.AddMaskType.SELECTION))
            elif add_mask and out.get("mask_png"):
                apply_mask(image, layer, out["mask_png"])
            layer.update(0, 0, layer.get_width(), layer.get_height())
            data = hl.parasite_data(prompt, model, out, secrets)
            layer.attach_parasite(Gimp.Parasite.new(hl.PARASITE_NAME, Gimp.PARASITE_PERSISTENT | Gimp.PARASITE_UNDOABLE,
                                                    list(data.encode("utf-8"))))
            inserted.append(layer)
    finally:
        image.undo_group_end()
    _record_timing("insert", time.time() - t0, {"layers": n, "image": image.get_id(), "undo_groups": 1,
                                                "names": [la.get_name() for la in inserted]})
    return inserted


def apply_mask(image, layer, mask_png):
    """The engine's mask PNG as the layer's mask, value for value (masks are linear "Y": written as Y u8)."""
    w, h = layer.get_width(), layer.get_height()
    data = _mask_bytes(mask_png, w, h)
    if data is None:  # pragma: no cover - fallback through the file plug-in
        tmp = _load_layer(image, mask_png)
        data = tmp.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "Y' u8", Gegl.AbyssPolicy.NONE)
        tmp.delete()
    mask = layer.create_mask(Gimp.AddMaskType.WHITE)
    layer.add_mask(mask)
    buf = mask.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), MASK_FORMAT, data)
    buf.flush()
    mask.update(0, 0, w, h)


# ------------------------------------------------------------------------------------------------- operations

def _engine_python():
    return hl.find_engine_python([_HERE, _REAL])


def _job_options(op, values):
    job = {"operation": op, "model": values.get("model") or "", "n": int(values.get("n") or 1)}
    for key in ("prompt", "quality", "size_mode", "background", "feather", "context_padding", "align", "tone_match",
                "blend", "add_mask", "concurrency", "variation_prompt", "size"):
        if key in values and values[key] is not None:
            job[key] = values[key]
    if "feather" in job:
        job["feather"] = float(job["feather"])
    if "context_padding" in job:
        job["context_padding"] = float(job["context_padding"])
    if op == "variation" and "prompt" not in job:
        job["prompt"] = values.get("variation_prompt") or ""
    return job


def _engine_error(error):
    """HostError from the engine's error object, keeping a shut-down model's live ``replacement``."""
    error = error or {}
    exc = hl.HostError.from_engine(error)
    exc.replacement = hl.clean_line(error.get("replacement") or "") if error.get("code") == "model_not_found" else ""
    return exc


def _with_model_switch(run, values, interactive):
    """Issue 9 part 3: a job whose model was shut down fails with the engine's text (it names the model and
    its live replacement; nothing already received is lost: the engine lists saved files in the message).
    Interactive runs are asked whether to switch; yes -> the replacement is remembered as the default model
    (``gimp-openai config set default_model=...``) and the run is repeated once with it."""
    try:
        return run(values)
    except hl.HostError as exc:
        replacement = getattr(exc, "replacement", "")
        if not (interactive and replacement and _ask_switch(exc, replacement)):
            raise
    try:
        hl.save_settings({"default_model": replacement}, python=_engine_python())
    except hl.HostError as exc:  # still use it now; say why it is not remembered
        Gimp.message(f"OpenAI: {replacement} is used now but could not be remembered: {exc.message}")
    return run(dict(values, model=replacement))


def _ask_switch(exc, replacement):
    """A yes/no GimpUi dialog (interactive runs only; never reached headless)."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init(PLUGIN_NAME)
    dialog = GimpUi.Dialog(title="OpenAI: model shut down", role=PLUGIN_NAME)
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    dialog.add_button(f"_Use {replacement}", Gtk.ResponseType.OK)
    # the engine's sentence (model, date, replacement) and the question; its generic hint would only repeat it
    label = Gtk.Label(label=hl.redact(exc.message, _secrets()) + f"\n\nSwitch to {replacement} for this run, "
                      "and remember it as your default model?")
    label.set_line_wrap(True)
    label.set_max_width_chars(70)
    box = dialog.get_content_area()
    box.set_border_width(12)
    box.add(label)
    dialog.set_default_response(Gtk.ResponseType.OK)
    dialog.show_all()
    ok = dialog.run() == Gtk.ResponseType.OK
    dialog.destroy()
    return ok


def run_items(op, values, items, summary=False):
    """Plan, export, run one job for all items, insert every image's results in its own undo group."""
    python = _engine_python()
    workdir = hl.make_workdir()
    try:
        Gimp.progress_init("OpenAI: planning")
        plan_req = {"operation": op, "model": values.get("model") or "",
                    "size_mode": values.get("size_mode") or "auto",
                    "context_padding": float(values.get("context_padding", 0.25) or 0.0),
                    "items": [{"id": it.id, "layer": layer_rect(it.layer), "selection_bounds": it.bounds}
                              for it in items]}
        plan = hl.plan(plan_req, workdir, python=python)
        job = _job_options(op, values)
        job["model"] = plan.get("model") or job["model"]
        job["out_dir"] = "out"
        job["source_name"] = items[0].name if len(items) == 1 else ""
        job["items"] = export_items(items, plan, workdir)
        os.mkdir(os.path.join(workdir, "out"))
        Gimp.progress_set_text(f"OpenAI: sending {len(items)} request(s)")
        result = hl.run_job(job, workdir, python=python, on_progress=_progress)
        if not result.get("items") and result.get("error"):  # the job as a whole failed (e.g. model gone)
            raise _engine_error(result["error"])
        by_id = dict((it.id, it) for it in items)
        # names as in the 2.10 host: the prompt for edits, "variation" (+ which path ran) for variations
        prompt = (job.get("prompt") or "") if op == "edit" else "variation"
        reports = []
        for entry in result.get("items", []):
            it = by_id.get(entry.get("id"))
            if it is None or not entry.get("ok"):
                continue
            model = entry.get("model") or job["model"]
            add_mask = bool(values.get("add_mask", True)) and (op == "edit" or not it.whole)
            outputs = entry.get("outputs") or []
            insert_outputs(it.image, it.layer, outputs, prompt, model, add_mask, _secrets(),
                           "engine" if op == "edit" else "selection")
            reports.append(hl.reports_text(outputs, _secrets()))
        report = "; ".join(r for r in reports if r)
        if report:  # what alignment/tone match corrected: in the status bar now, on each layer's parasite after
            Gimp.progress_set_text(report)
        Gimp.displays_flush()
        warnings = hl.warnings_text(result, _secrets())
        if warnings and not summary:  # paid images rescued outside the history folder: say where (batch: in summary)
            Gimp.message(warnings)
        failures = hl.failed_items(result)
        gone = hl.model_gone(result)
        if gone:  # nothing was done, only because the model is gone: the caller may offer its replacement
            raise _engine_error(gone)
        if summary:
            names = dict((it.id, it.name) for it in items)
            if failures and len(failures) == len(items):
                raise hl.HostError(hl.summary(result, names, _secrets()), "", "batch_failed")
            return hl.summary(result, names, _secrets())
        if failures:
            raise _engine_error(failures[0][1])
        return None
    finally:
        _cleanup(workdir)


def run_region(op, values, targets, interactive=False):
    items = []
    for k, (image, drawables) in enumerate(targets, start=1):
        items.append(collect_item(op, image, drawables, bool(values.get("whole_layer")), f"img-{k}", interactive))
    if op == "edit" and not (values.get("prompt") or "").strip():
        raise Refusal("The prompt is empty.", "Describe what to paint into the selection.")
    return _with_model_switch(lambda v: run_items(op, v, items), values, interactive)


def run_batch(values, interactive=False):
    op = values.get("batch_operation") or "edit"
    if op == "edit" and not (values.get("prompt") or "").strip():
        raise Refusal("The prompt is empty.", "Describe what to paint into each image's selection.")
    items, skipped = [], []
    images = sorted(Gimp.get_images(), key=lambda i: i.get_id())
    if not images:
        raise Refusal("No image is open.", "Open the images to process first.")
    whole_layer = (values.get("no_selection") or "whole layer") == "whole layer"
    for image in images:
        try:
            items.append(collect_item(op, image, image.get_selected_layers(), whole_layer,
                                      f"img-{image.get_id()}"))
        except Refusal as exc:
            skipped.append(f"\u2717 {_image_name(image)}: {exc.message}")
    if not items:
        raise hl.HostError("No open image can be processed:\n" + "\n".join(skipped), "", "batch_failed")
    text = _with_model_switch(lambda v: run_items(op, v, items, summary=True), values, interactive)
    return text + ("\n" + "\n".join(skipped) if skipped else "")


def run_generate(values, image, drawables, interactive=False):
    if not (values.get("prompt") or "").strip():
        raise Refusal("The prompt is empty.", "Describe the image to generate.")
    return _with_model_switch(lambda v: _generate(v, image, drawables), values, interactive)


def _generate(values, image, drawables):
    python = _engine_python()
    workdir = hl.make_workdir()
    try:
        Gimp.progress_init("OpenAI: generating")
        job = _job_options("generate", values)
        if job.get("size") == "auto":
            job.pop("size")
        job["out_dir"] = "out"
        job["items"] = [{"id": "generate"}]
        os.mkdir(os.path.join(workdir, "out"))
        result = hl.run_job(job, workdir, python=python, on_progress=_progress)
        failures = hl.failed_items(result)
        outputs = [o for e in result.get("items", []) if e.get("ok") for o in e.get("outputs") or []]
        if not outputs:
            raise _engine_error(failures[0][1] if failures else result.get("error"))
        model = next((e.get("model") for e in result.get("items", []) if e.get("model")), job["model"])
        new_image = image is None or values.get("target") == "new image"
        if new_image:
            w = max(o.get("width", 0) for o in outputs)
            h = max(o.get("height", 0) for o in outputs)
            image = Gimp.Image.new(w, h, Gimp.ImageBaseType.RGB)
            above = None
        else:
            above = (list(drawables) or list(image.get_selected_layers()) or [None])[0]
        for o in outputs:  # centred in the image
            o["x"] = (image.get_width() - int(o.get("width", 0))) // 2
            o["y"] = (image.get_height() - int(o.get("height", 0))) // 2
        insert_outputs(image, above, outputs, job["prompt"], model, False, _secrets())
        warnings = hl.warnings_text(result, _secrets())
        if warnings:  # paid images rescued outside the history folder: say where
            Gimp.message(warnings)
        if new_image:
            try:
                Gimp.Display.new(image)
            except (TypeError, GLib.Error):  # headless GIMP (gimp-console, batch): no display to open
                pass
        Gimp.displays_flush()
        return "; ".join(hl.describe_error(f[1]) for f in failures) if failures else None
    finally:
        _cleanup(workdir)


def run_settings(values, run_mode):
    """Save server URL, default model and history folder through the engine; store a key; test the connection."""
    python = _engine_python()
    lines = []
    changes = {}
    for key, setting in (("base_url", "base_url"), ("default_model", "default_model"),
                         ("history_folder", "history_dir")):
        value = (values.get(key) or "").strip()
        if value:
            changes[setting] = value
    if changes:
        hl.save_settings(changes, python=python)  # gimp-openai config set KEY=VALUE ... (never the key)
        lines += [f"{k}: saved ({changes[k]})" for k in sorted(changes)]
    if values.get("change_key") and run_mode == Gimp.RunMode.INTERACTIVE:
        key = _ask_key()
        if key:
            hl.store_key(key, python=python)
            lines.append("API key stored (not shown).")
    if values.get("test_connection"):
        code, objs, err = hl.run_engine(["models", "--json"], python=python)
        models = []
        for o in objs:
            for m in o.get("models", []) if isinstance(o, dict) else []:
                models.append(m.get("id") if isinstance(m, dict) else m)
        if code == 0 and models:
            lines.append("Connection works; image models: {}".format(", ".join(str(m) for m in models)))
            try:
                with open(_models_cache_path(), "w") as handle:
                    json.dump({"models": models, "time": time.time()}, handle)
            except OSError:
                pass
        else:
            raise hl.HostError("The connection test failed: %s" % (hl.clean_line(err)[-400:] or code),
                               "Check the server URL and the API key (Settings), then run 'gimp-openai doctor'.")
    return "OpenAI settings:\n" + "\n".join(lines) if lines else None


def _ask_key():
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk

    dialog = Gtk.Dialog(title="OpenAI API key", flags=0)
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    dialog.add_button("_Store", Gtk.ResponseType.OK)
    entry = Gtk.Entry()
    entry.set_visibility(False)
    entry.set_activates_default(True)
    dialog.get_content_area().add(Gtk.Label(label="Paste your API key (stored in the keyring, never shown):"))
    dialog.get_content_area().add(entry)
    dialog.set_default_response(Gtk.ResponseType.OK)
    dialog.show_all()
    ok = dialog.run() == Gtk.ResponseType.OK
    key = entry.get_text().strip() if ok else ""
    dialog.destroy()
    return key


if __name__ == "__main__":
    Gimp.main(OpenAIPlugIn.__gtype__, sys.argv)
