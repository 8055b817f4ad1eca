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

import gimp_openai_host as hl  # noqa: E402

hl.trace("plug-in started")

if "-run" in sys.argv:  # GIMP runs a procedure (not a query): the engine starts while GIMP's modules load
    hl.prestart_engine([_HERE, _REAL])

import gi  # noqa: E402
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


def _record_timing(what, seconds, extra=None):
    entry = {"what": what, "seconds": round(seconds, 4)}
    entry.update(extra or {})
    hl.record_timing(entry)


# ----------------------------------------------------------------------------------------------- registration

def _choice(param):
    """The PDB argument is the value (what scripts pass); the dialog's menu shows the manifest's words."""
    choice = Gimp.Choice.new()
    for i, value in enumerate(param["values"]):
        choice.add(value, i, hl.value_label(param, value), "")
    return choice


def menu_path(manifest, proc):
    """Where the procedure sits: the manifest's menu, then its place (hl.menu_place) as a bracketed last part.
    GIMP 3 reads a last "[name]" as a named section (gimp_utils_break_menu_path); a submenu a plug-in makes
    has no named sections (only GIMP's menus/*.ui files declare them), so the entry goes straight into the
    menu (gimp_menu_model_ui_added) and the name only orders it: GIMP adds a plug-in's entries sorted by the
    collation key of path + label (plug_in_menus_setup, plug_in_menus_tree_insert), so actions, then results,
    then Settings. Separators come only from those .ui sections: none between the groups."""
    base = manifest.get("menu", {}).get("gimp3", "<Image>/Filters/OpenAI")
    return f"{base}/[{hl.menu_place(manifest, proc['name'])}]"


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
            procedure.add_choice_argument(name, label, blurb, _choice(p), p["default"], _RW)
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
            if proc["operation"] in ("generate", "history"):  # no image needed: they can open a new one
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
        procedure.add_menu_path(menu_path(manifest, proc))
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
        hl.trace("run")
        interactive = run_mode == Gimp.RunMode.INTERACTIVE
        _record_timing("run", 0.0, {"procedure": proc["name"], "interactive": interactive})
        unsaved = UnsavedValues(proc)
        try:
            if interactive and proc["operation"] == "settings":
                show_saved_settings(config)
            elif run_mode != Gimp.RunMode.NONINTERACTIVE:
                unsaved.restore(config)
            if interactive and proc.get("chooser"):  # the artist chooses now: a script's last argument must not
                for p in hl.public_params(proc):       # skip the chooser
                    config.set_property(pdb_name(p["name"]), p["default"])
            if interactive:
                adapter = Gimp3(True)
                for name, value in flow.before_dialog(adapter, proc, image, drawables, _values(config, proc)).items():
                    config.set_property(pdb_name(name), value)
                # a chooser procedure asks in the workflow (results side by side, the history), and one with
                # no field to show asks nothing
                if not proc.get("chooser") and any(p.get("dialog", True) for p in hl.public_params(proc)) \
                        and not show_dialog(procedure, config, proc,
                                            _dialog_estimate(adapter, proc, image, drawables)):
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            values = _values(config, proc)
            if interactive:
                unsaved.keep(values)
            workflow = flow.Workflow(Gimp3(interactive, run_mode != Gimp.RunMode.NONINTERACTIVE), proc, values, python=_engine_python(), secrets=_secrets())
            message = workflow.run(image, drawables)
            if proc["operation"] == "settings":
                config.set_property("change-key", False)  # a new key is asked for once, not at every Save
            if message and workflow.only_cost:  # nothing to read but the cost: the status text says it
                _status(message)
            elif message:
                _tell(message)
            workflow.adapter.flush()
            if image is not None and not image.is_valid() and run_mode != Gimp.RunMode.NONINTERACTIVE:
                # The image was closed while the request ran (the results opened as a new image, and the
                # message says so). On SUCCESS libgimp keeps the run's values as a parasite of the image it ran
                # on, and GIMP would show its "Calling error ... invalid ID" beside our message. So no SUCCESS:
                # the values stay in the plug-in's own file for the next dialog and Repeat.
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            unsaved.clear()  # GIMP saves the values of a successful run itself
            hl.trace("return")
            return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
        except flow.Stop as stop:  # the artist said no: nothing changed, nothing failed
            if str(stop):
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


def _values(config, proc):
    return dict((p["name"], config.get_property(pdb_name(p["name"]))) for p in hl.public_params(proc))


class UnsavedValues:
    """The dialog's values of a run that did not succeed, kept by the plug-in itself.

    GIMP saves a procedure's last values only when it returns SUCCESS, so a failed run (server down, a
    refusal, the artist declining a question) would lose the prompt just typed. The values confirmed in the
    dialog are written here first and removed when the run succeeds; while the file exists, the next dialog
    and Filters > Repeat start from it.
    """

    def __init__(self, proc):
        self.proc = proc
        self.path = os.path.join(Gimp.directory(), "gimp-openai-unsaved-%s.json" % proc["name"])

    def keep(self, values):
        if self.proc["operation"] == "settings":  # the settings dialog shows what is saved, not last values
            return
        try:
            with open(self.path, "w", encoding="utf-8") as handle:
                json.dump(values, handle)
        except OSError:  # a read-only profile: the run goes on, only this convenience is lost
            pass

    def restore(self, config):
        try:
            with open(self.path, encoding="utf-8") as handle:
                values = json.load(handle)
        except (OSError, ValueError):
            return
        for p in hl.public_params(self.proc):
            if p["name"] in values:
                try:
                    config.set_property(pdb_name(p["name"]), values[p["name"]])
                except (TypeError, ValueError):  # a value of an older manifest: GIMP's own stays
                    pass

    def clear(self):
        try:
            os.remove(self.path)
        except OSError:
            pass


def _tell(text):
    """The run's one message (GIMP shows it in its message dialog, or on stderr without a display)."""
    _record_timing("message", 0.0, {"kind": "message", "text": text})
    Gimp.message(text)


def _status(text):
    """A line for the status bar (a run that worked, and what it cost), not a message box."""
    _record_timing("status", 0.0, {"text": text})
    try:
        Gimp.progress_set_text(text)
    except Exception:  # noqa: BLE001 - no progress to show it in (a script without a display)
        pass


def show_saved_settings(config):
    """The Settings dialog opens with what the engine has on file, not with the values typed last time (an
    empty server URL is OpenAI's)."""
    saved = hl.saved_settings(python=_engine_python())
    if not saved:
        return
    config.set_property("base-url", saved.get("base_url") or "")
    config.set_property("default-model", saved.get("default_model") or "")
    config.set_property("history-folder", saved.get("history_dir") or "")
    if isinstance(saved.get("max_cost"), (int, float)):
        config.set_property("max-cost", min(100000.0, max(0.0, float(saved["max_cost"]))))
    config.set_property("change-key", False)


def _secrets():
    return hl.env_secrets()


# ------------------------------------------------------------------------------------------------------ dialog

def _dialog_estimate(adapter, proc, image, drawables):
    """The regions a dialog's cost estimate is about, read now (GIMP's calls belong to this thread), or None
    for a dialog that sends nothing (Settings) or when they cannot be read (the run says why)."""
    if proc["operation"] not in ("edit", "variation", "generate", "batch", "expand"):
        return None
    try:
        return flow.DialogEstimate(adapter, proc, image, drawables)
    except Exception:  # noqa: BLE001 - no figure in the dialog; the run itself still asks before paying
        return None


def show_dialog(procedure, config, proc, estimate=None):
    """GimpUi.ProcedureDialog over the procedure's arguments, laid out for an artist: the manifest's basic
    fields first (the prompt on top, focused, so typing starts at once), then what the run should cost
    (``estimate``: a DialogEstimate), then the Advanced ones inside a
    collapsed expander. Every field has a mnemonic (GIMP checks them and names any that lacks one).
    Choices are menus of the manifest's words; the model is a text field that offers the server's models.
    Arguments the manifest keeps for scripts only ("dialog": false) get no field and their default."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init(PLUGIN_NAME)
    dialog = GimpUi.ProcedureDialog.new(procedure, config, hl.plain_label(proc["label"]).rstrip("\u2026."))
    shown = []
    for p in hl.public_params(proc):
        if p.get("dialog", True):
            shown.append(p)
        else:  # a script's value must not linger invisibly in the next interactive run
            config.set_property(pdb_name(p["name"]), p["default"])
    texts = {}
    boxes = []
    for box_id, params in (("basic-box", [p for p in shown if not p.get("advanced")]),
                           ("advanced-box", [p for p in shown if p.get("advanced")])):
        if not params:
            continue
        for p in params:
            if p["type"] == "choice":  # a labelled menu; GIMP's radio frames for <= 3 values carry no mnemonic
                dialog.get_widget(pdb_name(p["name"]), Gtk.ComboBox)
            elif p["type"] == "float":  # as many decimals as the step has (0.25, not 0.250)
                spin = dialog.get_widget(pdb_name(p["name"]), GimpUi.LabelSpin)
                if hasattr(spin, "set_digits"):
                    spin.set_digits(len(repr(float(p["step"])).rstrip("0").split(".")[1]) or 1)
        box = dialog.fill_box(box_id, [pdb_name(p["name"]) for p in params if p["type"] != "text"])
        box.set_spacing(6)
        if box_id == "advanced-box":
            box.set_margin_start(18)  # under the expander's arrow: what it folds away reads as its content
            box.set_margin_top(6)
        for position, p in enumerate(params):  # the manifest's order, as in GIMP 2.10 and the PDB
            if p["type"] == "text":
                holder, view = _text_field(GimpUi, Gtk, config, p)
                box.pack_start(holder, True, True, 0)
                box.reorder_child(holder, position)
                texts[p["name"]] = view
        if box_id == "basic-box" and estimate is not None:
            box.pack_start(_estimate_label(Gtk, config, proc, estimate), False, False, 0)
        boxes.append(box_id)
    for p in shown:
        if p["name"] in ("model", "default_model"):
            _model_field(dialog, GimpUi, Gtk, _cached_models(), pdb_name(p["name"]))
        elif p["type"] in ("string", "dirname"):  # room for a whole URL or folder
            field = _entry_of(dialog.get_widget(pdb_name(p["name"]), GimpUi.LabelEntry), Gtk)
            if field is not None:
                field.set_width_chars(36)
    if "advanced-box" in boxes:
        dialog.get_label("advanced-title", "_Advanced", False, True)
        expander = dialog.fill_expander("advanced", "advanced-title", False, "advanced-box")
        expander.set_expanded(False)
        expander.set_spacing(6)
        boxes[-1] = "advanced"
    dialog.fill(boxes)
    if proc["operation"] == "settings":
        dialog.set_ok_label("Sa_ve")  # "_Save" is GIMP's "Save Settings" button
    first = next((texts[p["name"]] for p in shown if p["name"] in texts and not p.get("advanced")), None)
    if first is not None:
        first.grab_focus()
    if hl.timings_file():
        dialog.connect("map-event", lambda d, _e: GLib.idle_add(_record_layout, d, Gtk) and False)
    ok = dialog.run()
    dialog.destroy()
    return ok


def _estimate_label(Gtk, config, proc, estimate):
    """A label under the basic fields with what the run should cost (images x n x size x quality, the model),
    asked again of the engine session already running (hostlib.estimate) whenever a value it depends on
    changes. The GTK main loop never waits for the engine: changes are gathered for 300 ms (typing a prompt
    or a model id is one question, not one per key), the question goes on a worker thread, and its answer
    comes back through GLib.idle_add; one question at a time, the latest values asked last."""
    import threading

    label = Gtk.Label(label="Estimated cost: asking\u2026")
    label.set_xalign(0.0)
    label.set_line_wrap(True)
    label.set_max_width_chars(64)
    label.set_margin_top(4)
    label.set_margin_bottom(6)  # apart from the Advanced expander below it
    label.set_tooltip_text("What the server should charge for this run, from its price list; a run above the "
                           "limit in Filters > OpenAI > Settings asks before anything is sent.")
    label.show()
    state = {"open": True, "timer": 0, "busy": False, "again": False, "text": None}
    try:
        python = _engine_python()
    except hl.HostError:
        python = None

    def show(text):
        if state["open"] and text != state["text"]:
            state["text"] = text
            label.set_text(text)
            _record_timing("estimate-label", 0.0, {"text": text})

    def work(plan):
        answer = hl.estimate(plan, python) if plan is not None and python else None
        if answer is not None:
            text = hl.estimate_label(answer)
        elif plan is None:
            text = "Estimated cost: nothing to send yet"
        else:
            text = "Estimated cost: not available (the engine did not answer); the run still asks above your limit"
        GLib.idle_add(done, text)

    def done(text):
        state["busy"] = False
        show(text)
        if state["again"]:
            state["again"] = False
            ask()
        return False

    def ask():
        state["timer"] = 0
        if not state["open"]:
            return False
        if state["busy"]:  # asked again when the answer in flight is in
            state["again"] = True
            return False
        state["busy"] = True
        try:
            plan = estimate.plan(_values(config, proc))
        except Exception:  # noqa: BLE001 - a value the workflow refuses: the run will say why
            plan = None
        threading.Thread(target=work, args=(plan,), name="gimp-openai-estimate", daemon=True).start()
        return False

    def changed(_config, pspec):
        if pspec.name.replace("-", "_") in flow.DialogEstimate.VALUES and state["open"]:
            if state["timer"]:
                GLib.source_remove(state["timer"])
            state["timer"] = GLib.timeout_add(300, ask)

    handler = config.connect("notify", changed)

    def closed(_widget):
        state["open"] = False
        if state["timer"]:
            GLib.source_remove(state["timer"])
            state["timer"] = 0
        config.disconnect(handler)

    label.connect("destroy", closed)
    ask()
    return label


def _record_layout(dialog, Gtk):
    """For tests (GIMP_OPENAI_HOST_TIMINGS): what the shown dialog holds, read from its widgets: each
    mnemonic label's text, its field's value as shown (text, or ticked or not) and whether it sits in the
    Advanced expander, the expander's state, the focus."""
    fields, expanders = [], []

    def shown_value(label):
        field = label.get_mnemonic_widget() or label.get_parent()
        if isinstance(field, Gtk.ToggleButton):
            return field.get_active()
        if isinstance(field, Gtk.Entry):
            return field.get_text()
        if isinstance(field, Gtk.TextView):
            buf = field.get_buffer()
            return buf.get_text(buf.get_start_iter(), buf.get_end_iter(), False)
        return None

    def walk(widget, inside):
        if isinstance(widget, Gtk.Label) and widget.get_use_underline():
            fields.append({"label": widget.get_label(), "advanced": inside,
                           "key": _keyval_name(widget.get_mnemonic_keyval()), "value": shown_value(widget)})
        children = widget.get_children() if isinstance(widget, Gtk.Container) else []
        if isinstance(widget, Gtk.Expander):
            expanders.append(widget.get_expanded())
            title = widget.get_label_widget()
            if title is not None:
                walk(title, inside)  # the expander's own title is outside what it folds away
            children = [c for c in children + [widget.get_child()] if c is not None and c is not title]
            inside = True
        for child in dict.fromkeys(children):
            walk(child, inside)

    walk(dialog.get_content_area(), False)
    focus = dialog.get_focus()
    _record_timing("dialog-layout", 0.0, {"fields": fields, "expanders": expanders,
                                          "focus": type(focus).__name__ if focus is not None else None})
    return False


def _keyval_name(keyval):
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk

    return Gdk.keyval_name(keyval) if keyval else None


def _text_field(GimpUi, Gtk, config, p):
    """A multi-line field bound to the argument, under a label with its mnemonic. Built here rather than by
    ProcedureDialog.get_widget, whose text view has no label (so GIMP reports it as lacking a mnemonic)."""
    view = Gtk.TextView.new_with_buffer(GimpUi.prop_text_buffer_new(config, pdb_name(p["name"]), -1))
    view.set_wrap_mode(Gtk.WrapMode.WORD)
    view.set_accepts_tab(False)  # Tab moves on to the next field, as everywhere else in the dialog
    for side in ("top", "bottom", "left", "right"):
        getattr(view, f"set_{side}_margin")(4)
    view.set_tooltip_text(p.get("help") or None)
    scrolled = Gtk.ScrolledWindow()
    scrolled.set_policy(Gtk.PolicyType.NEVER, Gtk.PolicyType.AUTOMATIC)
    scrolled.set_shadow_type(Gtk.ShadowType.IN)
    scrolled.set_size_request(440, 84 if not p.get("advanced") else 56)
    scrolled.add(view)
    label = Gtk.Label.new_with_mnemonic(p["label"])
    label.set_xalign(0.0)
    label.set_mnemonic_widget(view)
    holder = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=3)
    holder.pack_start(label, False, False, 0)
    holder.pack_start(scrolled, True, True, 0)
    holder.show_all()
    return holder, view


def _entry_of(widget, Gtk):
    """The Gtk.Entry inside what ProcedureDialog.get_widget returned (a GimpUi.LabelEntry)."""
    if isinstance(widget, Gtk.Entry):
        return widget
    get_entry = getattr(widget, "get_entry", None)
    return get_entry() if get_entry is not None else None


def model_rows(models):
    """(id, what the list shows) for each model a server offers: its id, and when it is retiring, the date.
    ``models``: the engine's entries ({"id", "shutdown_date", "offered"}) or bare ids; shut-down ones left out
    (nothing can be made with them)."""
    rows = []
    for m in models:
        entry = m if isinstance(m, dict) else {"id": m}
        model_id = hl.clean_line(entry.get("id") or "")
        if not model_id or entry.get("offered") is False or model_id in [r[0] for r in rows]:
            continue
        date = hl.clean_line(entry.get("shutdown_date") or "")
        rows.append((model_id, f"{model_id} \u2014 retires {date}" if date else model_id))
    return rows


def _model_field(dialog, GimpUi, Gtk, models, name="model"):
    """The model field: empty means automatic (said in the field); offers the models the server lists, with
    the date each retiring one shuts down, in a list under the field (typing filters it; the arrow at the
    field's end opens it). A text field rather than a Gimp.Choice: GIMP caches registrations (pluginrc), so a
    choice built from the server's list would go stale, and a model id typed by hand must stay possible.
    The list shown at once is the one remembered from the last dialog or connection test; the engine's own
    list (its cache while fresh, else the server's answer) replaces it as soon as it arrives."""
    # GimpUi.LabelEntry keeps the field's label (asking for a Gtk.Entry gives a bare entry without it)
    entry = _entry_of(dialog.get_widget(name, GimpUi.LabelEntry), Gtk)
    if entry is None:  # pragma: no cover - an unexpected widget: the plain field still works
        return
    entry.set_width_chars(28 if name == "model" else 36)
    store = Gtk.ListStore(str, str)
    completion = Gtk.EntryCompletion()
    completion.set_model(store)
    cell = Gtk.CellRendererText()
    completion.pack_start(cell, True)
    completion.add_attribute(cell, "text", 1)
    completion.set_minimum_key_length(1)  # an emptied field (automatic) opens no list over the dialog
    completion.set_popup_single_match(True)

    state = {"open": True, "all": False}

    def matches(_completion, key, tree_iter):
        return state["all"] or key.strip().lower() in store[tree_iter][0].lower()

    def selected(_completion, model, tree_iter):
        entry.set_text(model[tree_iter][0])  # the id, not the words shown beside it
        entry.set_position(-1)
        return True

    completion.set_match_func(matches)
    completion.connect("match-selected", selected)
    entry.set_completion(completion)
    entry.set_icon_from_icon_name(Gtk.EntryIconPosition.SECONDARY, "go-down")
    entry.set_icon_tooltip_text(Gtk.EntryIconPosition.SECONDARY, "Models this server offers")

    def popup(_entry, _position, _event):
        """The whole list, whatever the field holds: GTK opens it when the text changes and is long enough,
        so for a moment any length is, and the field's text is offered again unchanged."""
        entry.grab_focus()
        state["all"] = True
        completion.set_minimum_key_length(0)
        text = entry.get_text()
        entry.set_text("")
        entry.set_text(text)

        def settle():
            state["all"] = False
            completion.set_minimum_key_length(1)
            return False

        GLib.timeout_add(1000, settle)

    entry.connect("icon-press", popup)
    entry.connect("destroy", lambda _w: state.update(open=False))

    def fill(rows):
        if not state["open"]:
            return False
        store.clear()
        for row in rows:
            store.append(list(row))
        ids = [r[0] for r in rows]
        if name == "model":  # Settings' default model: empty means the newest, said by its label
            entry.set_placeholder_text(("automatic: " + ids[0]) if ids else "automatic")
        entry.set_tooltip_text(("Models this server offers: " + ", ".join(r[1] for r in rows) + ". " if rows else "")
                               + "Empty: automatic. Any model id can be typed.")
        _record_timing("model-field", 0.0, {"rows": [r[1] for r in rows]})
        return False

    fill(model_rows(models))

    def ask_engine():
        listed = _engine_models()
        if listed is not None:
            _remember_models(listed)
            GLib.idle_add(fill, model_rows(listed))

    import threading
    threading.Thread(target=ask_engine, name="gimp-openai-models", daemon=True).start()


def _engine_models():
    """The image models of the saved server as the engine lists them (its cache while fresh, else the
    server's answer, else an older cache), or None when it cannot say."""
    try:
        code, objects, _stderr = hl.run_engine(["--json", "models"], python=_engine_python())
    except Exception:  # noqa: BLE001 - an engine that cannot answer leaves the remembered list
        return None
    answer = objects[-1] if objects else {}
    if code != 0 or not answer.get("ok") or not isinstance(answer.get("models"), list):
        return None
    return [m for m in answer["models"] if isinstance(m, dict)]


def _models_cache_path():
    return os.path.join(Gimp.directory(), "gimp-openai-models.json")


def _remember_models(models):
    """Keep the engine's list (ids and dates) for the next dialog to show at once."""
    try:
        with open(_models_cache_path(), "w") as handle:
            json.dump({"models": [m.get("id") for m in models], "entries": models, "time": time.time()}, handle)
    except (OSError, TypeError, ValueError):
        pass


def _cached_models():
    """The image models listed last time (by the engine for a dialog, or a connection test), newest first:
    the engine's entries with their dates where known, else the ids."""
    try:
        with open(_models_cache_path()) as handle:
            data = json.load(handle)
        entries = data.get("entries")
        if isinstance(entries, list):
            return [e for e in entries if isinstance(e, dict)]
        return [str(m) for m in data.get("models", [])]
    except (OSError, ValueError, AttributeError):
        return []


# ------------------------------------------------------------------------------------------------------ pixels

def _rect(d):
    return Gegl.Rectangle.new(int(d["x"]), int(d["y"]), int(d["width"]), int(d["height"]))


def read_region(drawable, place):
    """RGBA u8 (non-linear) bytes of ``place`` (image coordinates) from a layer, whatever its precision;
    transparent where ``place`` runs past the layer (GEGL's abyss, AbyssPolicy.NONE: an edit's selection may
    reach past its layer, and the engine fills those pixels for the model)."""
    ok, ox, oy = drawable.get_offsets()
    local = {"x": place["x"] - ox, "y": place["y"] - oy, "width": place["width"], "height": place["height"]}
    return drawable.get_buffer().get(_rect(local), 1.0, FORMAT, Gegl.AbyssPolicy.NONE)


def read_selection(image, place):
    """The selection inside ``place`` as 8-bit coverage (0 = not selected, 255 = selected)."""
    return image.get_selection().get_buffer().get(_rect(place), 1.0, MASK_FORMAT, Gegl.AbyssPolicy.NONE)


def pixels_of(layer):
    """A layer's RGBA u8 bytes as GIMP holds them (tests compare them with the engine's PNG)."""
    return layer.get_buffer().get(Gegl.Rectangle.new(0, 0, layer.get_width(), layer.get_height()), 1.0, FORMAT,
                                  Gegl.AbyssPolicy.NONE)


def reference_layers(image, exclude):
    """[(name, layer)]: the layers named ``ref:...`` in ``image`` first, then in the other open images (groups
    searched, not taken: their pixels belong to the layers inside); hidden ones count."""
    found = []
    images = [image] + [im for im in sorted(Gimp.get_images(), key=lambda i: i.get_id())
                        if im.get_id() != image.get_id()]
    for im in images:
        for layer in _all_layers(im.get_layers()):
            if layer.is_group() or (exclude is not None and layer.get_id() == exclude.get_id()):
                continue
            name = layer.get_name()
            if name.strip().lower().startswith(flow.REFERENCE_PREFIX):
                label = name if im.get_id() == image.get_id() else "%s (%s)" % (name, _image_name(im))
                found.append((label, layer))
    return found


def export_reference(layer, max_width, max_height, path):
    """The layer scaled down (never up) to fit ``max_width`` x ``max_height``, read through GEGL at that scale:
    no full-size copy and no bigger upload than the request needs."""
    w, h = layer.get_width(), layer.get_height()
    scale = min(1.0, float(max_width) / w, float(max_height) / h)
    sw, sh = max(1, int(w * scale)), max(1, int(h * scale))
    data = layer.get_buffer().get(Gegl.Rectangle.new(0, 0, sw, sh), scale, FORMAT, Gegl.AbyssPolicy.CLAMP)
    hl.write_png(path, sw, sh, data, 4)


def export_visible(image, path):
    """The canvas as it shows (every visible layer, the projection) as an RGBA PNG; nothing is added to the
    image (the layer made from it is never inserted)."""
    visible = Gimp.Layer.new_from_visible(image, image, "gimp-openai visible")
    try:
        hl.write_png(path, visible.get_width(), visible.get_height(), pixels_of(visible), 4)
    finally:
        visible.delete()


def expand_canvas(image, width, height, dx, dy, spec):
    """The canvas resized (layers moved with the picture, their size kept, so the new area is transparent)
    and the painted layer on top with its mask, in ONE undo group (insert_outputs' group nests in it)."""
    t0 = time.time()
    image.undo_group_start()
    try:
        image.resize(width, height, dx, dy)
        inserted = insert_outputs(image, None, [spec])
    finally:
        image.undo_group_end()
    _record_timing("expand", time.time() - t0, {"image": image.get_id(), "undo_groups": 1,
                                               "canvas": [image.get_width(), image.get_height()]})
    return inserted[0]


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


def _result_layer(image, path, name, width, height):
    """A new layer of the image's kind holding the engine's PNG (8-bit non-linear RGBA without row filters,
    read by hostlib; GEGL converts it to the image's precision and mode as the buffer takes it)."""
    png = hl.read_png(path)
    if png is None:  # pragma: no cover - not the engine's PNG: GIMP's file plug-in reads any PNG
        layer = _load_layer(image, path)
        layer.set_name(name)
        return layer
    w, h, channels, data = png
    gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
    kind = Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE
    layer = Gimp.Layer.new(image, name, int(width), int(height), kind, 100.0, Gimp.LayerMode.NORMAL)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, w, h), {1: "Y' u8", 2: "Y'A u8", 3: "R'G'B' u8", 4: FORMAT}[channels], data)
    buf.flush()
    return layer


def _mask_bytes(path, width, height):
    """The 8-bit mask PNG's values, unchanged, or None when it is not one of the engine's PNGs."""
    png = hl.read_png(path)
    if png is None or png[2] != 1 or png[:2] != (width, height):  # pragma: no cover
        return None
    return png[3]


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


# ------------------------------------------------------------------------------------------------- preview

def _is_preview(item):
    return item.get_parasite(hl.PREVIEW_PARASITE) is not None


def _all_layers(items):
    for item in items:
        yield item
        if item.is_group():
            for child in _all_layers(item.get_children()):
                yield child


class _Unrecorded:
    """Changes to an image that are not the artist's: with its undo frozen (gimp_image_undo_freeze is meant for
    in-situ previews; undo_disable would throw the artist's whole history away), its dirty state as it was (a
    clean image stays clean: closing it does not ask to save a preview) and its selected layers as they were
    (inserting a layer selects it). The preview layer is added and removed in the same state, so what undo
    replays never meets it."""

    def __init__(self, image):
        self.image = image

    def __enter__(self):
        self.dirty = self.image.is_dirty()
        self.selected = list(self.image.get_selected_layers())
        self.image.undo_freeze()
        return self

    def __exit__(self, *exc):
        try:
            selected = [la for la in self.selected if la.is_valid()]
            if selected and [la.get_id() for la in self.image.get_selected_layers()] != [la.get_id() for la
                                                                                        in selected]:
                self.image.set_selected_layers(selected)
            if not self.dirty:
                self.image.clean_all()
        finally:
            self.image.undo_thaw()
        return False


def _new_preview_layer(image, spec, width, height):
    """A transparent preview layer of ``image``, not in it yet (floating), with its parasite, offsets and the
    engine's layer mask, and one transparent pixel written the way previews are (GEGL and babl set up their
    conversion from the engine's format now, not during the first preview)."""
    gray = image.get_base_type() == Gimp.ImageBaseType.GRAY
    kind = Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE
    layer = Gimp.Layer.new(image, spec.name, width, height, kind, 100.0, Gimp.LayerMode.NORMAL)
    layer.attach_parasite(Gimp.Parasite.new(hl.PREVIEW_PARASITE, Gimp.PARASITE_PERSISTENT,
                                            list(spec.parasite.encode("utf-8"))))
    layer.set_offsets(spec.x, spec.y)
    if spec.mask == "engine" and spec.mask_png:  # the same mask for every preview of the item
        apply_mask(image, layer, spec.mask_png)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, 1, 1), FORMAT, bytes(4))
    buf.flush()
    return layer


def _attached(image, layer):
    return any(item.get_id() == layer.get_id() for item in _all_layers(image.get_layers()))


def prepare_preview(image, spec, layer=None):
    """The preview layer made while the model works (the engine's ``partial_place`` line: where the previews
    will go and their mask), so that the first preview only puts it in the image and sets its pixels: making the
    layer and its 1536² mask cost 3-4 times a pixel update (docs/performance.md). It stays out of the image
    until then: a run cancelled while it waits (GIMP kills the plug-in) leaves nothing in the image. Returns the
    layer (``layer`` itself when it is still there with that place and size)."""
    width, height = int(spec.width), int(spec.height)
    with _Unrecorded(image):
        if layer is not None and layer.is_valid():
            if (layer.get_width(), layer.get_height()) == (width, height) and \
                    layer.get_offsets()[1:] == (spec.x, spec.y):
                return layer
            _drop(image, layer)
        return _new_preview_layer(image, spec, width, height)


def _drop(image, layer):
    """Remove a preview layer from the image, or delete it when it never went in."""
    if _attached(image, layer):
        image.remove_layer(layer)
    else:
        layer.delete()


def show_preview(image, above, spec, layer=None):
    """The preview's pixels in ``layer`` (the one made ahead, put in the image now, or the one shown so far, when
    it is still there and of the same size: only its pixels change) or in a new layer; in the image above
    ``above`` (where the result will go: above the layer and its earlier results; on top when None). Returns the
    layer."""
    png = hl.read_png(spec.png)
    if png is None:  # pragma: no cover - not the engine's PNG: no preview rather than a slow path
        return layer
    w, h, channels, data = png
    fmt = {1: "Y' u8", 2: "Y'A u8", 3: "R'G'B' u8", 4: FORMAT}[channels]
    with _Unrecorded(image):
        if layer is not None and layer.is_valid() and (layer.get_width(), layer.get_height()) != (w, h):
            _drop(image, layer)
            layer = None
        if layer is None or not layer.is_valid():
            layer = _new_preview_layer(image, spec, w, h)
        if not _attached(image, layer):
            parent = above.get_parent() if above is not None else None
            position = _above_earlier_results(image, above) if above is not None else 0
            image.insert_layer(layer, parent, position)
        if layer.get_offsets()[1:] != (spec.x, spec.y):
            layer.set_offsets(spec.x, spec.y)
        buf = layer.get_buffer()
        buf.set(Gegl.Rectangle.new(0, 0, w, h), fmt, data)
        buf.flush()
        layer.update(0, 0, w, h)
    return layer


def remove_previews(image):
    """Every preview layer in the image (this run's, or one a killed run left), removed unrecorded."""
    found = [la for la in _all_layers(image.get_layers()) if _is_preview(la)]
    if found:
        with _Unrecorded(image):
            for layer in found:
                if layer.is_valid():
                    image.remove_layer(layer)
    return len(found)


# ------------------------------------------------------------------------------------------------- adapter

class Gimp3:
    """What the one workflow (gimp_openai_workflow) needs from GIMP 3."""

    #: the Settings dialog opens with what the engine has on file (show_saved_settings)
    shows_saved_settings = True

    def __init__(self, interactive, displays=True):
        self.interactive = interactive
        self.displays = displays
        self.previews = {}  # image id -> the preview layer shown

    def flush(self):
        """Show the changes on the image's displays. A script's run (non-interactive) leaves that to the script,
        as GIMP's own plug-ins do: without a display GIMP renders the whole image at once when flushed (0.2-0.3 s
        for a 4096² image in GIMP 3.2), work a script may not need after each call."""
        if self.displays:
            Gimp.displays_flush()

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
        elif _is_preview(drawable):  # a killed run's preview, clicked: the layer it previewed on
            drawable = flow.layer_of_results(_siblings(image, drawable), drawable,
                                             lambda la: _is_result(la) or _is_preview(la)) or drawable
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

    def reference_layers(self, image, exclude):
        return reference_layers(image, exclude)

    def export_reference(self, layer, max_width, max_height, path):
        export_reference(layer, max_width, max_height, path)

    def export_visible(self, image, path):
        export_visible(image, path)

    def expand_canvas(self, image, width, height, dx, dy, spec):
        layer = expand_canvas(image, width, height, dx, dy, spec)
        self.flush()
        return layer

    def insert(self, image, anchor, layers, group_name):
        return insert_outputs(image, anchor, layers, group_name)

    def alive(self, image, layer):
        return image.is_valid() and (layer is None or layer.is_valid())

    def prepare_preview(self, target, spec):
        image = target.image
        t0 = time.time()
        self.previews[image.get_id()] = made = prepare_preview(image, spec, self.previews.get(image.get_id()))
        seconds = time.time() - t0
        if not hl.timings_file():
            return
        entry = {"at": t0 + seconds, "image": image.get_id()}
        if os.environ.get("GIMP_OPENAI_HOST_KEEP_WORKDIR") == "1":  # tests: what GIMP holds now, read back
            ok, x, y = made.get_offsets()
            entry.update({"x": x, "y": y, "width": made.get_width(), "height": made.get_height(),
                          "mask": made.get_mask() is not None, "dirty": image.is_dirty(),
                          "transparent": not any(bytes(pixels_of(made))[3::4]), "in_image": _attached(image, made),
                          "layers": [la.get_name() for la in image.get_layers()],
                          "selected": [la.get_name() for la in image.get_selected_layers()]})
        _record_timing("preview-ready", seconds, entry)

    def preview(self, target, spec):
        image = target.image
        t0 = time.time()
        layer = self.previews.get(image.get_id())
        made = layer is None or not layer.is_valid()  # the layer is made now (else: made ahead, or shown before)
        self.previews[image.get_id()] = shown = show_preview(image, target.layer, spec, layer)
        self.flush()
        seconds = time.time() - t0
        if not hl.timings_file():
            return
        entry = {"at": t0 + seconds, "image": image.get_id(), "fresh": made}
        if os.environ.get("GIMP_OPENAI_HOST_KEEP_WORKDIR") == "1":  # tests: what GIMP holds now, read back
            ok, x, y = shown.get_offsets()
            entry.update({"x": x, "y": y, "width": shown.get_width(), "height": shown.get_height(), "png": spec.png,
                          "pixels_equal": pixels_of(shown) == (hl.read_png(spec.png) or (0, 0, 0, b""))[3],
                          "mask": shown.get_mask() is not None, "dirty": image.is_dirty(),
                          "undo_enabled": image.undo_is_enabled(),
                          "layers": [la.get_name() for la in image.get_layers()],
                          "selected": [la.get_name() for la in image.get_selected_layers()]})
        _record_timing("preview", seconds, entry)

    def end_preview(self, target):
        image = target.image
        made = self.previews.pop(image.get_id(), None)
        t0 = time.time()
        if made is not None and made.is_valid() and not _attached(image, made):
            made.delete()  # made ahead, never shown: it never went into the image
        removed = remove_previews(image)
        if removed:
            self.flush()
            _record_timing("end-preview", time.time() - t0, {"image": image.get_id(), "removed": removed,
                                                             "dirty": image.is_dirty()})

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

    def end_progress(self):
        """GIMP disconnects its Cancel from the plug-in when the progress ends (gimp_plug_in_progress_end)."""
        try:
            Gimp.progress_end()
        except Exception:  # noqa: S110 - no progress bar to end
            pass

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


    # ------------------------------------------------------------------------------ results and history
    def result_group(self, image, drawables):
        drawables = list(drawables or []) or list(image.get_selected_layers())
        if len(drawables) != 1:
            return None
        drawable = drawables[0]
        if isinstance(drawable, Gimp.LayerMask):
            drawable = Gimp.Layer.from_mask(drawable)
        if not isinstance(drawable, Gimp.Layer):
            return None
        group = drawable if drawable.is_group() else drawable.get_parent()
        if group is None or not _is_result(group):
            return None
        return group, list(group.get_children())

    def is_visible(self, layer):
        return bool(layer.get_visible())

    def layer_label(self, layer):
        return layer.get_name()

    def show_only(self, image, layers, index):
        image.undo_group_start()
        try:
            for k, layer in enumerate(layers):
                layer.set_visible(k == index)
            image.set_selected_layers([layers[index]])
        finally:
            image.undo_group_end()
        self.flush()

    def keep_result(self, image, group, layer):
        keep_result(image, group, layer)

    def choose_result(self, image, group, layers, current):
        return choose_result(group, layers, current)

    def choose_history(self, listing, image):
        return choose_history(listing, image)


def keep_result(image, group, layer):
    """``layer`` takes the group's place (same parent and position; its mask and parasite go with it) and the
    group goes, with the other results: ONE undo step."""
    t0 = time.time()
    image.undo_group_start()
    try:
        parent = group.get_parent()
        position = image.get_item_position(group)
        image.reorder_item(layer, parent, position)
        layer.set_visible(True)
        image.remove_layer(group)
        image.set_selected_layers([layer])
    finally:
        image.undo_group_end()
    _record_timing("pick", time.time() - t0, {"kept": layer.get_name(), "undo_groups": 1})


def _gui():
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init(PLUGIN_NAME)
    return GimpUi, Gtk


#: Longest side of a result's picture in the picker: two or three side by side fill a laptop screen's width.
PICK_THUMB = 256
#: A small retouch (a 100 px region) is enlarged to this, so the differences between results can be seen.
PICK_MIN = 192


def choose_result(group, layers, current):
    """The results side by side, each as it would look in the image (its layer mask applied), the one showing
    chosen; a click chooses, a double-click (or Enter) keeps. Returns the 0-based index, or None."""
    GimpUi, Gtk = _gui()
    gi.require_version("GdkPixbuf", "2.0")
    dialog = GimpUi.Dialog(title="Pick Result", role=PLUGIN_NAME)
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    dialog.add_button("_Keep This One", Gtk.ResponseType.OK)
    dialog.set_default_response(Gtk.ResponseType.OK)
    box = dialog.get_content_area()
    box.set_border_width(12)
    box.set_spacing(8)
    head = Gtk.Label(xalign=0.0)
    head.set_markup("<b>%s</b>" % GLib.markup_escape_text(group.get_name()))
    box.pack_start(head, False, False, 0)
    hint = Gtk.Label(label="Choose the result to keep; the others and the group are removed (Edit \u203a Undo "
                           "brings them back).", xalign=0.0)
    hint.set_line_wrap(True)
    hint.get_style_context().add_class("dim-label")
    box.pack_start(hint, False, False, 0)
    flow_box = Gtk.FlowBox()
    flow_box.set_selection_mode(Gtk.SelectionMode.NONE)
    flow_box.set_max_children_per_line(min(len(layers), 4))
    flow_box.set_min_children_per_line(min(len(layers), 4))
    flow_box.set_column_spacing(10)
    flow_box.set_row_spacing(10)
    flow_box.set_homogeneous(True)
    buttons = []
    first = None
    for k, layer in enumerate(layers):
        button = Gtk.RadioButton.new_from_widget(first)
        first = first or button
        button.set_mode(False)  # a toggle tile, not a round indicator
        button.set_relief(Gtk.ReliefStyle.NONE)
        tile = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
        tile.set_border_width(4)
        tile.pack_start(Gtk.Image.new_from_pixbuf(_result_picture(layer)), False, False, 0)
        label = Gtk.Label.new_with_mnemonic("Result _%d" % (k + 1) if k < 9 else "Result %d" % (k + 1))
        label.set_mnemonic_widget(button)
        tile.pack_start(label, False, False, 0)
        button.add(tile)
        button.set_tooltip_text(layer.get_name())
        button.connect("button-press-event", _double_click_keeps(dialog, Gtk))
        buttons.append(button)
        flow_box.add(button)
    buttons[current].set_active(True)
    box.pack_start(flow_box, True, True, 0)
    dialog.show_all()
    buttons[current].grab_focus()
    if hl.timings_file():
        dialog.connect("map-event", lambda d, _e: GLib.idle_add(_record_layout, d, Gtk) and False)
    answer = dialog.run()
    chosen = next((k for k, b in enumerate(buttons) if b.get_active()), current)
    dialog.destroy()
    return chosen if answer == Gtk.ResponseType.OK else None


def _double_click_keeps(dialog, Gtk):
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk

    def on_press(button, event):
        if event.type == Gdk.EventType._2BUTTON_PRESS:
            button.set_active(True)
            dialog.response(Gtk.ResponseType.OK)
            return True
        return False
    return on_press


def _result_picture(layer):
    """The layer as the image shows it: its pixels through its layer mask, over GIMP's checks where it is
    transparent, at most PICK_THUMB on the longer side."""
    from gi.repository import GdkPixbuf

    w, h = layer.get_width(), layer.get_height()
    scale = min(PICK_THUMB / max(w, h), max(1.0, PICK_MIN / max(w, h)))  # a small region is shown larger
    tw, th = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    rect = Gegl.Rectangle.new(0, 0, w, h)
    pixels = bytearray(layer.get_buffer().get(rect, 1.0, FORMAT, Gegl.AbyssPolicy.NONE))
    mask = layer.get_mask()
    if mask is not None:
        coverage = mask.get_buffer().get(rect, 1.0, "Y' u8", Gegl.AbyssPolicy.NONE)
        alpha = bytes(pixels[3::4])
        pixels[3::4] = bytes((a * m + 127) // 255 for a, m in zip(alpha, coverage))
    full = GdkPixbuf.Pixbuf.new_from_bytes(GLib.Bytes.new(bytes(pixels)), GdkPixbuf.Colorspace.RGB, True, 8,
                                           w, h, w * 4)
    return full.composite_color_simple(tw, th, GdkPixbuf.InterpType.BILINEAR, 255, 8, 0x999999, 0x666666)


def _history_text(entry):
    """Pango markup for one history row: the prompt first (what the artist remembers), then model, date and
    cost, then where it was made."""
    esc = GLib.markup_escape_text
    prompt = hl.clean_line(entry.get("prompt") or "", _secrets())
    if len(prompt) > 90:
        prompt = prompt[:89].rstrip() + "\u2026"
    if not prompt:
        prompt = "variation" if (entry.get("operation") or "").startswith("variation") else "(no prompt)"
    when = (entry.get("time") or "")[:16].replace("T", " ")
    facts = [hl.clean_line(entry.get("model") or "") or "unknown model", when + " UTC" if when else ""]
    if entry.get("cost") is not None:
        facts.append("cost $%.3f" % entry["cost"] if entry["cost"] >= 0.001 else "cost under $0.001")
    elif isinstance(entry.get("usage"), dict) and entry["usage"].get("total_tokens"):
        facts.append("{:,} tokens for the request".format(int(entry["usage"]["total_tokens"])))
    if entry.get("k") and entry.get("n") and entry["n"] > 1:
        facts.append("result %d of %d" % (entry["k"], entry["n"]))
    place = entry.get("place")
    source = hl.clean_line(entry.get("source") or "")
    if place:
        where = "%s, %d\u00d7%d at %d, %d" % (source or "an image", place["width"], place["height"], place["x"],
                                              place["y"])
    elif entry.get("operation") == "generate":
        where = "generated" + (", %s" % entry["size"] if entry.get("size") else "")
    else:
        where = source or "no description (its sidecar is missing)"
    tags = []
    if entry.get("partial"):
        tags.append("preview kept after a failure")
    if entry.get("rescued_from"):
        tags.append("rescued from a full history folder")
    line3 = esc(where) + ("  <i>%s</i>" % esc(", ".join(tags)) if tags else "")
    return "<b>%s</b>\n<small>%s</small>\n<small>%s</small>" % (
        esc(prompt), esc(" \u00b7 ".join(f for f in facts if f)), line3)


def choose_history(listing, image):
    """The history, newest first, with thumbnails, prompt, model, date, cost and where each was made; a search
    field filters by prompt, model or image name. Returns the chosen entry's id, or None."""
    GimpUi, Gtk = _gui()
    gi.require_version("GdkPixbuf", "2.0")
    from gi.repository import GdkPixbuf

    entries = listing.get("entries") or []
    dialog = GimpUi.Dialog(title="OpenAI History", role=PLUGIN_NAME)
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    dialog.add_button("_Insert", Gtk.ResponseType.OK)
    dialog.set_default_response(Gtk.ResponseType.OK)
    dialog.set_default_size(720, 560)
    box = dialog.get_content_area()
    box.set_border_width(12)
    box.set_spacing(8)
    where = "at its place in %s when it fits there, else as a new image" % _image_name(image) if image is not None \
        else "as a new image"
    intro = Gtk.Label(label="Results kept in %s. The one you choose goes back %s; nothing is sent or paid again."
                      % (hl.to_text(listing.get("folder") or "the history folder"), where), xalign=0.0)
    intro.set_line_wrap(True)
    intro.set_max_width_chars(90)
    box.pack_start(intro, False, False, 0)
    search_row = Gtk.Box(spacing=6)
    search_label = Gtk.Label.new_with_mnemonic("_Search")
    search = Gtk.SearchEntry()
    search.set_placeholder_text("prompt, model or image name")
    search_label.set_mnemonic_widget(search)
    search_row.pack_start(search_label, False, False, 0)
    search_row.pack_start(search, True, True, 0)
    box.pack_start(search_row, False, False, 0)
    store = Gtk.ListStore(GdkPixbuf.Pixbuf, str, str, str)  # thumbnail, markup, id, what the search reads
    for entry in entries:
        picture = None
        if entry.get("thumbnail"):
            try:
                picture = GdkPixbuf.Pixbuf.new_from_file(entry["thumbnail"])
                picture = picture.composite_color_simple(picture.get_width(), picture.get_height(),
                                                         GdkPixbuf.InterpType.NEAREST, 255, 8, 0x999999, 0x666666)
            except GLib.Error:
                picture = None
        haystack = " ".join(hl.to_text(entry.get(k) or "") for k in ("prompt", "model", "source", "id")).lower()
        store.append([picture, _history_text(entry), entry["id"], haystack])
    filtered = store.filter_new()
    filtered.set_visible_func(lambda model, it, _d: all(w in model[it][3] for w in
                                                         search.get_text().lower().split()))
    search.connect("search-changed", lambda _s: filtered.refilter())
    view = Gtk.TreeView(model=filtered)
    view.set_headers_visible(False)
    view.set_enable_search(False)
    thumb = Gtk.CellRendererPixbuf()
    thumb.set_fixed_size(176, 176)
    view.append_column(Gtk.TreeViewColumn("", thumb, pixbuf=0))
    text = Gtk.CellRendererText()
    text.set_property("wrap-width", 460)
    text.set_property("ypad", 6)
    view.append_column(Gtk.TreeViewColumn("", text, markup=1))
    view.connect("row-activated", lambda *_a: dialog.response(Gtk.ResponseType.OK))
    scrolled = Gtk.ScrolledWindow()
    scrolled.set_shadow_type(Gtk.ShadowType.IN)
    scrolled.set_policy(Gtk.PolicyType.NEVER, Gtk.PolicyType.AUTOMATIC)
    scrolled.add(view)
    list_label = Gtk.Label.new_with_mnemonic("_Results (newest first)")
    list_label.set_xalign(0.0)
    list_label.set_mnemonic_widget(view)
    box.pack_start(list_label, False, False, 0)
    box.pack_start(scrolled, True, True, 0)
    notes = list(listing.get("notes") or [])
    footer = []
    if listing.get("more"):
        footer.append("%d older result(s) are not listed (gimp-openai history list shows them all)."
                      % listing["more"])
    if notes:
        footer.append("%d file(s) could not be read and are left out: %s" % (
            len(notes), hl.clean_line(notes[0], _secrets()) + (" \u2026" if len(notes) > 1 else "")))
    if footer:
        note = Gtk.Label(label="\n".join(footer), xalign=0.0)
        note.set_line_wrap(True)
        note.get_style_context().add_class("dim-label")
        box.pack_start(note, False, False, 0)
    if len(filtered):
        view.get_selection().select_path(Gtk.TreePath.new_first())
    dialog.show_all()
    view.grab_focus()
    if hl.timings_file():
        dialog.connect("map-event", lambda d, _e: GLib.idle_add(_record_layout, d, Gtk) and False)
    answer = dialog.run()
    model, it = view.get_selection().get_selected()
    chosen = model[it][2] if it is not None else None
    dialog.destroy()
    return chosen if answer == Gtk.ResponseType.OK else None


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
    box = dialog.get_content_area()
    box.set_border_width(12)  # the question did touch the window's edge
    box.set_spacing(6)
    box.add(Gtk.Label(label=question))
    box.add(entry)
    dialog.set_default_response(Gtk.ResponseType.OK)
    dialog.show_all()
    ok = dialog.run() == Gtk.ResponseType.OK
    key = entry.get_text().strip() if ok else ""
    dialog.destroy()
    return key


if __name__ == "__main__":
    Gimp.main(OpenAIPlugIn.__gtype__, sys.argv)
