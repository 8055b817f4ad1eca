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
import gimp_openai_workflow as flow  # noqa: E402

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
            if run_mode == Gimp.RunMode.INTERACTIVE and proc["operation"] == "settings":
                show_saved_settings(config)
            if run_mode == Gimp.RunMode.INTERACTIVE:
                if not show_dialog(procedure, config, proc):
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            values = dict((p["name"], config.get_property(pdb_name(p["name"]))) for p in hl.public_params(proc))
            workflow = flow.Workflow(Gimp3(run_mode == Gimp.RunMode.INTERACTIVE), proc, values,
                                     python=_engine_python(), secrets=_secrets())
            message = workflow.run(image, drawables)
            if proc["operation"] == "settings":
                config.set_property("change-key", False)  # a new key is asked for once, not at every Save
            if message:
                _tell(message)
            Gimp.displays_flush()
            return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
        except flow.Stop as stop:  # the artist said no: nothing changed, nothing failed
            _tell(str(stop))
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        except hl.HostError as exc:
            # one message: GIMP shows the returned error to the artist (and hands it to a calling script)
            text = "OpenAI: " + hl.describe_error(exc, _secrets())
            _record_timing("message", 0.0, {"kind": "error", "text": text})
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                               GLib.Error.new_literal(Gimp.PlugIn.error_quark(), text, 0))
        except Exception as exc:  # a bug: still a message with what to do, never a traceback dialog
            import traceback
            traceback.print_exc()
            text = hl.describe_error(hl.HostError(
                f"The OpenAI plug-in failed unexpectedly: {exc.__class__.__name__}: {hl.redact(exc, _secrets())}",
                "Please report this with the steps that led to it; results already received are in the history "
                "folder (see Settings).", "internal_error"), _secrets())
            return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR,
                                               GLib.Error.new_literal(Gimp.PlugIn.error_quark(), text, 0))
        finally:
            try:
                Gimp.progress_end()
            except Exception:  # noqa: S110 - no progress bar to end
                pass


def _tell(text):
    """The run's one message (GIMP shows it in its message dialog, or on stderr without a display)."""
    _record_timing("message", 0.0, {"kind": "message", "text": text})
    Gimp.message(text)


def show_saved_settings(config):
    """The Settings dialog opens with what the engine has on file, not with the values typed last time (an
    empty server URL is OpenAI's)."""
    saved = hl.saved_settings(python=_engine_python())
    if not saved:
        return
    config.set_property("base-url", saved.get("base_url") or "")
    config.set_property("default-model", saved.get("default_model") or "")
    config.set_property("history-folder", saved.get("history_dir") or "")
    config.set_property("change-key", False)


def _secrets():
    return hl.env_secrets()


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


def layer_rect(layer):
    ok, ox, oy = layer.get_offsets()
    return {"x": ox, "y": oy, "width": layer.get_width(), "height": layer.get_height()}


def _image_name(image):
    f = image.get_file() if image is not None else None
    if f is not None and f.get_path():
        return os.path.basename(f.get_path())
    return f"Untitled-{image.get_id()}" if image is not None else ""


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


def _is_result(item):
    return item.get_parasite(hl.PARASITE_NAME) is not None


def _siblings(image, item):
    parent = item.get_parent()
    return list(parent.get_children()) if parent is not None else list(image.get_layers())


def _above_earlier_results(image, anchor):
    return flow.position_above_results(_siblings(image, anchor), anchor, _is_result)


def _layer_of_results(image, group):
    return flow.layer_of_results(_siblings(image, group), group, _is_result)


def insert_outputs(image, above, layers, group_name=None):
    """The workflow's layers above ``above`` (inside a group named ``group_name`` when given), at their
    offsets, with their names, masks and parasites, in ONE undo group."""
    t0 = time.time()
    image.undo_group_start()
    try:
        parent = above.get_parent() if above is not None else None
        position = _above_earlier_results(image, above) if above is not None else 0
        if group_name:
            group = _new_group(image, group_name)
            image.insert_layer(group, parent, position)
            group.attach_parasite(Gimp.Parasite.new(hl.PARASITE_NAME, Gimp.PARASITE_PERSISTENT |
                                                    Gimp.PARASITE_UNDOABLE, list(b"{}")))
            parent, position = group, 0
        inserted = []
        for spec in layers:
            layer = _result_layer(image, spec.png, spec.name, spec.width, spec.height)
            image.insert_layer(layer, parent, position + len(inserted))
            layer.set_offsets(spec.x, spec.y)
            layer.set_visible(getattr(spec, "visible", True))
            if spec.mask == "selection":  # variations: the selection is the mask
                layer.add_mask(layer.create_mask(Gimp.AddMaskType.SELECTION))
            elif spec.mask == "engine" and spec.mask_png:
                apply_mask(image, layer, spec.mask_png)
            layer.update(0, 0, layer.get_width(), layer.get_height())
            layer.attach_parasite(Gimp.Parasite.new(hl.PARASITE_NAME, Gimp.PARASITE_PERSISTENT | Gimp.PARASITE_UNDOABLE,
                                                    list(spec.parasite.encode("utf-8"))))
            inserted.append(layer)
    finally:
        image.undo_group_end()
    _record_timing("insert", time.time() - t0, {"layers": len(layers), "image": image.get_id(), "undo_groups": 1,
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


# ------------------------------------------------------------------------------------------------- adapter

class Gimp3:
    """What the one workflow (gimp_openai_workflow) needs from GIMP 3."""

    #: the Settings dialog opens with what the engine has on file (show_saved_settings)
    shows_saved_settings = True

    def __init__(self, interactive):
        self.interactive = interactive

    def target(self, image, drawables):
        if image is None:
            return flow.Target(None, None, "", kind="none")
        drawables = list(drawables or []) or list(image.get_selected_layers())
        name = _image_name(image)
        indexed = image.get_base_type() == Gimp.ImageBaseType.INDEXED
        if len(drawables) != 1:
            kind = "none" if not drawables else "several"
            return flow.Target(image, None, name, kind=kind, indexed=indexed, count=len(drawables))
        drawable = drawables[0]
        if isinstance(drawable, Gimp.LayerMask):  # the result's mask after a run: work on its layer
            drawable = Gimp.Layer.from_mask(drawable)
        if not isinstance(drawable, Gimp.Layer):
            return flow.Target(image, None, name, kind="channel", indexed=indexed)
        if drawable.is_group() and _is_result(drawable):  # results of n > 1: the layer they were made for
            drawable = _layer_of_results(image, drawable) or drawable
        kind = "group" if drawable.is_group() else "layer"
        res = Gimp.Selection.bounds(image)
        non_empty, x1, y1, x2, y2 = res[1], res[2], res[3], res[4], res[5]
        selection = {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1} if non_empty else None
        return flow.Target(image, drawable, name, kind=kind, layer_rect=layer_rect(drawable), selection=selection,
                           indexed=indexed)

    def open_targets(self):
        return [self.target(image, image.get_selected_layers())
                for image in sorted(Gimp.get_images(), key=lambda i: i.get_id())]

    def export_region(self, target, place, path):
        t0 = time.time()
        hl.write_png(path, place["width"], place["height"], read_region(target.layer, place), 4)
        _record_timing("export", time.time() - t0, {"items": 1})

    def export_selection(self, target, place, path):
        hl.write_png(path, place["width"], place["height"], read_selection(target.image, place), 1)

    def insert(self, image, anchor, layers, group_name):
        return insert_outputs(image, anchor, layers, group_name)

    def alive(self, image, layer):
        return image.is_valid() and (layer is None or layer.is_valid())

    def new_image(self, width, height):
        return Gimp.Image.new(width, height, Gimp.ImageBaseType.RGB)

    def image_size(self, image):
        return image.get_width(), image.get_height()

    def show(self, image):
        try:
            Gimp.Display.new(image)
        except (TypeError, GLib.Error):  # headless GIMP (gimp-console, batch): no display to open
            pass

    def ask(self, question, title="OpenAI", yes="_Yes"):
        return _ask(question, title, yes)

    def ask_secret(self, question):
        return _ask_key(question)

    def progress(self, fraction, message):
        Gimp.progress_update(max(0.0, min(1.0, fraction)))
        if message:
            Gimp.progress_set_text(message)

    def status(self, text):
        Gimp.progress_set_text(text)

    def keep_workdir(self, path):
        """Tests (GIMP_OPENAI_HOST_KEEP_WORKDIR=1) keep the job folder to compare the inserted pixels with the
        engine's PNGs."""
        if os.environ.get("GIMP_OPENAI_HOST_KEEP_WORKDIR") == "1":
            _record_timing("workdir", 0.0, {"path": path})
            return True
        return False

    def models_listed(self, models):
        """Remember the models the server offered, for the model field's completion."""
        try:
            with open(_models_cache_path(), "w") as handle:
                json.dump({"models": list(models), "time": time.time()}, handle)
        except OSError:
            pass


def _engine_python():
    return hl.find_engine_python([_HERE, _REAL])


def _ask(question, title, yes):
    """A yes/no GimpUi dialog (interactive runs only; never reached headless)."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init(PLUGIN_NAME)
    dialog = GimpUi.Dialog(title=title, role=PLUGIN_NAME)
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    dialog.add_button(yes, Gtk.ResponseType.OK)
    label = Gtk.Label(label=hl.redact(question, _secrets()))
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


def _ask_key(question):
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk

    dialog = Gtk.Dialog(title="OpenAI API key", flags=0)
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    dialog.add_button("_Store", Gtk.ResponseType.OK)
    entry = Gtk.Entry()
    entry.set_visibility(False)
    entry.set_activates_default(True)
    dialog.get_content_area().add(Gtk.Label(label=question))
    dialog.get_content_area().add(entry)
    dialog.set_default_response(Gtk.ResponseType.OK)
    dialog.show_all()
    ok = dialog.run() == Gtk.ResponseType.OK
    key = entry.get_text().strip() if ok else ""
    dialog.destroy()
    return key


if __name__ == "__main__":
    Gimp.main(OpenAIPlugIn.__gtype__, sys.argv)
