"""The one host workflow both GIMP hosts run: check -> plan -> export -> job -> insert -> report.

Standard library only, Python 2.7 and 3 (GIMP 2.10 and GIMP 3 import it). Every rule a host used to carry
in its own copy lives here once: which layer and region a run works on and the refusals when it cannot,
the whole-layer question, the job's options (the manifest's values, forwarded as they are), layer and group
names, the model-switch question, batches and their summary, settings. What only GIMP can do (read pixels,
insert layers, ask, tell, show progress) a host provides as an *adapter*; tests drive the whole workflow with a
fake one, without GIMP.

The adapter (duck-typed; see tests/gimp2/test_workflow.py for a complete fake):

- ``interactive``: True when the artist started the run from the menu (questions may be asked)
- ``target(image, drawables)`` -> :class:`Target`: the facts of the active layer and the selection
- ``open_targets()`` -> [Target] for every open image (batches)
- ``export_region(target, place, path)``: ``place`` (image coordinates) of the layer as an RGBA PNG
- ``export_selection(target, place, path)``: the selection inside ``place`` as a gray PNG
- ``insert(image, anchor_layer, layers, group_name)`` -> inserted layers, in one undo group: ``layers`` are
  :class:`LayerSpec`, placed above ``anchor_layer`` (a group of them when ``group_name``)
- ``new_image(width, height)`` -> image; ``image_size(image)`` -> (width, height); ``show(image)``
- ``alive(image, layer)`` -> False when the image was closed or the layer deleted while the request ran
- ``preview(target, spec)``: show a streamed preview (a :class:`LayerSpec` named ``PREVIEW_NAME``, with the
  ``PREVIEW_PARASITE``) above ``target.layer`` (on top of the image when it is None), where the result will go;
  a second call replaces the first one's pixels in place. Never an undo step, never leaves the image dirty.
- ``end_preview(target)``: remove every preview layer of ``target.image`` (this run's, and any a killed run left),
  again without an undo step; nothing when there is none or the image is gone
- optional ``prepare_preview(target, spec)``: make that preview layer ahead, with its mask, at the spec's place
  and size (``spec.png`` is None), once the request is sent, so ``preview`` only changes pixels; nothing may
  show before the first preview (GIMP 3 keeps the layer out of the image until then)
- ``shows_saved_settings``: True when the Settings dialog opens with the saved settings (then an empty field
  there means the default; elsewhere it keeps what is saved)
- ``end_progress()``: the progress bar (and GIMP's Cancel button with it) ends: the results are about to go in
- ``ask(question, title, yes)`` -> bool (``yes``: the label of the button that says yes);
  ``ask_secret(question)`` -> text or None; ``progress(fraction, text)``; ``status(text)``
- ``models_listed(ids)``: the models a connection test found (for the model field's completion)
- ``keep_workdir(path)`` -> True to keep the job folder (tests compare the engine's PNGs with the layers)

Past the edge, references and Expand Canvas:

- ``export_region`` exports transparent pixels where ``place`` runs past the layer (an edit's selection may)
- optional ``reference_layers(image, exclude)`` -> [(name, layer)]: every layer whose name starts with
  ``ref:`` (:data:`REFERENCE_PREFIX`), in ``image`` first, then in the other open images; ``exclude`` (the layer
  being edited) is never one of them. Without it no reference is sent.
- ``export_reference(layer, max_width, max_height, path)``: the layer as an RGBA PNG scaled down (never up)
  to fit within that size
- ``export_visible(image, path)``: the canvas as it shows (every visible layer) as an RGBA PNG
- ``expand_canvas(image, width, height, dx, dy, spec)`` -> the inserted layer: in ONE undo group, the canvas
  resized to ``width`` x ``height`` with the old canvas at (``dx``, ``dy``) (layers move with it and keep their
  size: the new area is transparent), and ``spec`` (a :class:`LayerSpec`, mask "engine") on top of the image

For picking among n results and for the history (no request, nothing paid):

- ``result_group(image, drawables)`` -> (group, [its layers, top first]) when the active item is a group of
  results or a layer (or mask) inside one, else None
- ``is_visible(layer)``; ``layer_label(layer)`` -> its name
- ``show_only(image, layers, k)``: layer ``k`` (0-based) visible, the others hidden, in one undo group
- ``keep_result(image, group, layer)``: ``layer`` takes the group's place (same parent and position, with its
  mask and parasite, visible) and the group goes with the other results, in ONE undo group
- optional ``choose_result(image, group, layers, current)`` -> 0-based index or None (cancelled): a host that
  can show the results side by side; without it an interactive run keeps the one showing
- optional ``choose_history(listing, image)`` -> an entry id or None (cancelled): a host that can show the
  history with thumbnails; without it the run uses the ``entry`` argument (empty: the newest result)
"""

from __future__ import absolute_import, division, print_function

import json
import os

import gimp_openai_host as hl

#: A layer whose name starts with this (in any open image) is sent as a reference by Edit Selection and
#: Generate: a convention the Layers dialog shows the same way in GIMP 2.10 and 3, needs no dialog field,
#: survives in the XCF, and a hidden reference still counts (artists hide them so the picture stays clean).
REFERENCE_PREFIX = u"ref:"
#: Expand Canvas: the dialog's "Sides" -> the sides that grow.
EXPAND_SIDES = {"all": ("left", "top", "right", "bottom"), "left-right": ("left", "right"),
                "top-bottom": ("top", "bottom"), "left": ("left",), "right": ("right",), "top": ("top",),
                "bottom": ("bottom",)}
#: Expand Canvas values that become the job's margins (or aspect and sides), not fields of their own.
EXPAND_ONLY = ("sides", "amount", "aspect")

#: Host-only values of the manifest: they steer the workflow, the engine never needs them.
HOST_ONLY = ("whole_layer", "no_selection", "batch_operation", "target", "base_url", "default_model",
             "history_folder", "change_key", "test_connection", "max_cost")


class Refusal(hl.HostError):
    """An input the plug-in does not handle, said plainly with what to do instead; nothing was sent."""

    def __init__(self, message, hint="", code="refused"):
        hl.HostError.__init__(self, message, hint, code)


class Stop(Exception):
    """The artist declined a question: nothing to do and nothing to report as an error."""


class ModelGone(hl.HostError):
    """The whole run failed only because its model was shut down; ``replacement`` is the live successor."""

    def __init__(self, error):
        error = error or {}
        hl.HostError.__init__(self, hl.to_text(error.get("message") or u"The model was shut down."),
                              hl.to_text(error.get("hint") or u""), "model_not_found", error.get("saved") or [])
        self.replacement = hl.clean_line(error.get("replacement") or u"")


class Target(object):
    """What the host read from GIMP about one image, before any rule is applied.

    ``kind``: "layer", "group", "channel" (a channel or a mask that has no layer), "none" (no active layer)
    or "several" (several layers selected). ``selection``: the selection's bounds in image coordinates, or
    None when nothing is selected. Hosts give the layer a layer mask belongs to, not the mask: after a run the
    result's mask is the active drawable, and the next run (or Filters > Repeat) must still work.
    """

    def __init__(self, image, layer, name, kind="layer", layer_rect=None, selection=None, indexed=False,
                 count=1):
        self.image, self.layer, self.name, self.kind = image, layer, name, kind
        self.layer_rect, self.selection, self.indexed, self.count = layer_rect, selection, indexed, count


class Item(object):
    """A checked target: the region to send (``bounds``) and whether it is the whole layer."""

    def __init__(self, item_id, target, bounds, whole):
        self.id, self.target, self.bounds, self.whole = item_id, target, bounds, whole
        self.name = target.name


class LayerSpec(object):
    """One layer to insert: the engine's PNGs, where, its name and parasite, and which mask it gets:
    ``mask`` is "engine" (the engine's mask PNG), "selection" (the image's selection) or None. ``visible``:
    only the first of several results shows, so each of the others is one eye click away instead of hidden
    under the layers above it."""

    def __init__(self, output, name, parasite, mask, visible=True):
        self.png, self.mask_png = output["layer_png"], output.get("mask_png")
        self.x, self.y = int(output.get("x", 0)), int(output.get("y", 0))
        self.width, self.height = int(output["width"]), int(output["height"])
        self.name, self.parasite, self.mask, self.visible = name, parasite, mask, visible


class Previews(object):
    """The live preview of one run: each streamed preview shown where its item's result will go, composited
    like it (the engine's layer mask, the same place), each newer one replacing the one before; removed
    before the results go in, and when the run fails.

    A preview is a courtesy, never a reason for a run to fail and never an undo step: the adapter changes the
    image with its undo frozen, and any trouble showing one (the image closed, the layer deleted, a file that
    cannot be read) skips that preview while the request goes on. A run GIMP kills (Cancel) cannot remove its
    preview; the layer's name says what it is, and the next run on that image removes it (``clear_stale``)."""

    def __init__(self, adapter, mask=None):
        self.adapter, self.mask = adapter, mask
        self.targets = {}  # item id -> (Target, place(line) -> (x, y) or None)
        self.shown = {}  # item id -> Target showing a preview now
        self.count = 0

    def watch(self, item_id, target, place=None):
        self.targets[item_id] = (target, place)

    def clear_stale(self):
        """Remove preview layers a killed run left in this run's images (before anything else happens)."""
        seen = []
        for target, _place in self.targets.values():
            if target.image is None or any(target.image is image for image in seen):
                continue
            seen.append(target.image)
            self._end(target)

    def show(self, line):
        """A ``partial`` line: show that preview. A ``partial_place`` line (the request was sent; previews will
        come): an adapter with ``prepare_preview`` makes the preview layer and its mask now, while the model
        works, so that each preview only changes pixels."""
        prepare = line.get("type") == "partial_place"
        entry = self.targets.get(line.get("id"))
        if entry is None and len(self.targets) == 1:
            entry = list(self.targets.values())[0]
        if entry is None or not (line.get("layer_png") or prepare):
            return
        if prepare and getattr(self.adapter, "prepare_preview", None) is None:
            return
        target, place = entry
        try:
            if target.image is None or not self.adapter.alive(target.image, target.layer):
                return  # closed or deleted while the request runs: the results open elsewhere later
            output = dict(line, layer_png=line.get("layer_png"))
            if place is not None:
                output["x"], output["y"] = place(line)
            mask = self.mask if line.get("mask_png") else None
            parasite = json.dumps({"preview": True, "item": hl.to_text(line.get("id") or u""),
                                   "index": line.get("index")}, sort_keys=True)
            spec = LayerSpec(output, hl.PREVIEW_NAME, parasite, mask)
            if prepare:
                self.adapter.prepare_preview(target, spec)
            else:
                self.adapter.preview(target, spec)
        except Exception:  # noqa: BLE001 - a preview that cannot be shown is skipped; the result still comes
            return
        self.shown[line.get("id")] = target  # removed on every way out, shown or only made ready
        if not prepare:
            self.count += 1

    def end(self):
        """Remove the previews shown (idempotent; never raises: it runs on every way out of a run)."""
        shown, self.shown = list(self.shown.values()), {}
        for target in shown:
            self._end(target)

    def _end(self, target):
        try:
            if target.image is not None and self.adapter.alive(target.image, None):
                self.adapter.end_preview(target)
        except Exception:  # noqa: BLE001 - an image closed meanwhile: nothing left to remove
            pass


# ----------------------------------------------------------------------------------------------- the rules

def intersect(a, b):
    x1, y1 = max(a["x"], b["x"]), max(a["y"], b["y"])
    x2 = min(a["x"] + a["width"], b["x"] + b["width"])
    y2 = min(a["y"] + a["height"], b["y"] + b["height"])
    return {"x": x1, "y": y1, "width": max(0, x2 - x1), "height": max(0, y2 - y1)}


def check_target(target):
    """The layer to work on, or a Refusal that says what is wrong and what to do."""
    if target.image is None or target.kind == "none":
        raise Refusal(u"There is no active layer.", u"Open an image and click a layer, then run again.",
                      "no_layer")
    if target.indexed:
        raise Refusal(u"This image is indexed (a limited palette); the models work in full colour.",
                      u"Convert it with Image > Mode > RGB, run again, and convert back if you need to.",
                      "indexed_image")
    if target.kind == "several":
        raise Refusal(u"%d layers are selected; the plug-in works on one layer at a time." % target.count,
                      u"Click a single layer in the Layers dialog, then run again.", "several_layers")
    if target.kind == "channel":
        raise Refusal(u"The active item is a channel, not a layer.",
                      u"Click a layer in the Layers dialog, then run again.", "not_a_layer")
    if target.kind == "group":
        raise Refusal(u"The active layer is a layer group; its pixels belong to the layers inside it.",
                      u"Pick a layer inside the group, or merge the group (Layer > Merge Down), then run again.",
                      "layer_group")


def region(target, operation, whole_layer, interactive, ask):
    """(bounds, whole): the selection's box, or the whole layer.

    An edit's selection that reaches past the layer is sent whole: the artist selected where the picture
    should go on (past a pasted photo's edge, into an empty corner), and the result layer grows to fill it
    while the layer itself is never resized. Variations have nothing to invent past the layer, so their box is
    the part inside it. A selection that misses the layer altogether is refused, not painted from nothing: it
    almost always means another layer is active than the one the artist looks at, and the hint says so.

    Nothing selected: variations take the whole layer; an edit does when asked to (``whole_layer``), or when
    the artist says yes to the question in an interactive run; otherwise it stops with what to do.
    """
    layer_box = target.layer_rect
    if target.selection is None:
        if whole_layer or operation == "variation":
            return layer_box, True
        if interactive:
            if ask(u"Nothing is selected. Use the whole layer (%dx%d px)? A larger area costs more." %
                   (layer_box["width"], layer_box["height"]), u"OpenAI: nothing selected", u"_Use the whole layer"):
                return layer_box, True
            raise Stop(u"Nothing was changed: select the area to change (e.g. with the Ellipse Select tool) "
                       u"and run again.")
        raise Refusal(u"There is no selection, so there is nothing to edit.",
                      u"Select the area first, or pass whole_layer=TRUE to use the whole layer.", "no_selection")
    bounds = intersect(target.selection, layer_box)
    if not bounds["width"] or not bounds["height"]:
        raise Refusal(u"The selection does not touch the active layer.",
                      u"Click the layer under the selection in the Layers dialog, or select an area that "
                      u"overlaps the layer, then run again.", "selection_outside_layer")
    if operation == "edit":
        return dict(target.selection), False
    return bounds, False


def before_dialog(adapter, proc, image, drawables, values):
    """The checks that need no server, run before the dialog opens, so nobody fills in a dialog for a run that
    cannot happen: a channel or several layers active, an indexed image, a selection beside the layer refuse
    (Refusal); nothing selected asks at once whether to use the whole layer. Returns the values the answer
    changes (``{"whole_layer": True}``), for the dialog to show; raises Stop when the artist says no."""
    operation = proc["operation"]
    if operation not in ("edit", "variation"):
        return {}
    target = adapter.target(image, drawables)
    check_target(target)
    whole_layer = bool(values.get("whole_layer"))
    bounds, whole = region(target, operation, whole_layer, adapter.interactive, adapter.ask)
    if whole and operation == "edit" and not whole_layer:
        return {"whole_layer": True}
    return {}


class DialogEstimate(object):
    """What a dialog needs to show the estimate of the run it sets up, so the artist sees the price of n,
    quality, model and size while choosing them. The regions are read from GIMP once, when the dialog opens
    (GIMP's calls belong to the GUI's thread); ``plan(values)`` is pure, for a worker thread, and gives the
    plan to ask the engine about (None when the run could not happen: its refusal comes with the run)."""

    #: the dialog's values the estimate depends on: a change of any of them asks the engine again
    VALUES = ("n", "quality", "model", "size_mode", "size", "prompt", "variation_prompt", "batch_operation",
              "no_selection", "context_padding", "whole_layer", "target", "sides", "amount", "aspect", "band")

    def __init__(self, adapter, proc, image=None, drawables=None):
        self.proc, self.operation = proc, proc["operation"]
        self.targets, self.canvas = [], None
        if self.operation in ("edit", "variation"):
            self.targets = [adapter.target(image, drawables)]
        elif self.operation == "batch":
            self.targets = adapter.open_targets()
        elif self.operation in ("generate", "expand") and image is not None:
            width, height = adapter.image_size(image)
            self.canvas = {"width": int(width), "height": int(height)}
        self.targets = [t for t in self.targets if self._usable(t)]

    @staticmethod
    def _usable(target):
        try:
            check_target(target)
        except Refusal:
            return False
        return True

    def plan(self, values):
        workflow = Workflow(None, self.proc, values)
        operation = workflow.operation_of_items()
        if self.operation == "generate":
            plan = dict(workflow.plan_dict("generate", []), size=hl.to_text(values.get("size") or u"auto"))
            if self.canvas and plan["size"] == u"auto" and values.get("target") != "new image":
                plan["canvas"] = self.canvas
            return plan
        if self.operation == "expand":  # the tiles of the grown canvas (its pixels are read when it runs)
            return workflow.expand_plan(workflow.expand_job(), self.canvas) if self.canvas else None
        if self.operation not in ("edit", "variation", "batch"):
            return None
        items = []
        for number, target in enumerate(self.targets, 1):
            if target.selection is None and self.operation == "batch" and operation == "edit" and \
                    values.get("no_selection") != "whole layer":
                continue  # skipped, or asked about when the run starts (and then asked about the price again)
            try:  # nothing selected: the dialog opened after the artist chose the whole layer
                bounds, _whole = region(target, operation, True, False, None)
            except Refusal:
                continue
            items.append(Item(u"img-%d" % number, target, bounds, _whole))
        return workflow.plan_dict(operation, items) if items else None


def _plain_number(number):
    """``100000.0`` -> ``100,000``; ``0.5`` -> ``0.5``."""
    return u"{:,.0f}".format(number) if float(number).is_integer() else u"%g" % number


def check_prompt(operation, values):
    if operation in ("edit", "generate") and not hl.clean_line(values.get("prompt", u"")):
        what = u"the image to generate" if operation == "generate" else u"what the selection should become"
        raise Refusal(u"The prompt is empty.", u"Describe %s." % what, "empty_prompt")


def job_options(proc, operation, values):
    """The job's options: the manifest's values as they are (typed as the manifest declares them), less the
    ones only the host uses. The engine maps them to its options."""
    types = dict((p["name"], p["type"]) for p in hl.public_params(proc))
    job = {}
    for name, value in values.items():
        if name in HOST_ONLY or value is None:
            continue
        kind = types.get(name)
        if kind == "int":
            value = int(value)
        elif kind == "float":
            value = float(value)
        elif kind == "bool":
            value = bool(value)
        else:
            value = hl.to_text(value)
        job[name] = value
    job["operation"] = operation
    job["out_dir"] = "out"
    if operation == "variation":
        job.pop("prompt", None)
        job["add_mask"] = True  # the raw variation; the host masks it with the selection when asked
    if operation == "generate" and job.get("size") == "auto":
        job.pop("size")
    return job


def generated_size(job):
    """The size a generation asks for, as (width, height): references need be no larger. "auto" and a
    canvas's shape are at most 1536 px a side for the models that take references."""
    size = hl.to_text(job.get("size") or u"")
    if u"x" in size:
        try:
            width, height = (int(v) for v in size.split(u"x", 1))
            return width, height
        except ValueError:
            pass
    return 1536, 1536


def layer_specs(outputs, prompt, model, mask, secrets=(), cost=None, quality=u""):
    """Names (``OpenAI: <prompt> (k/n)``), parasites and masks of the layers to insert, in the engine's order.
    ``cost``: what the request that made them cost (the engine's item ``cost``); each parasite keeps its share."""

    outputs = sorted(outputs, key=lambda o: o.get("index", 0))
    count = len(outputs)
    share = hl.cost_share(cost, count, model, quality)
    return [LayerSpec(out, hl.layer_name(prompt, k, count, path=out.get("path"), secrets=secrets),
                      hl.parasite_data(prompt, model, out, secrets, cost=share), mask, visible=k == 1)
            for k, out in enumerate(outputs, 1)]


def group_name(prompt, count, secrets=()):
    """The name of the group holding n > 1 results, or None for one result."""
    if count < 2:
        return None
    return hl.layer_name(prompt, 1, count, secrets=secrets).rsplit(u" (", 1)[0] + u" (%d results)" % count


def position_above_results(siblings, anchor, is_result):
    """Where a new result goes among ``siblings`` (top first): above ``anchor`` and above the results already
    stacked on it, so it is on top and visible, not hidden under an earlier one."""
    position = siblings.index(anchor)
    while position > 0 and is_result(siblings[position - 1]):
        position -= 1
    return position


def layer_of_results(siblings, group, is_result):
    """A group of results stands for the layer they were made for: the first sibling below it that is not a
    result itself (None when there is none)."""
    for item in siblings[siblings.index(group) + 1:]:
        if not is_result(item):
            return item
    return None


# --------------------------------------------------------------------------------------------- the workflow

class Workflow(object):
    """One procedure's run against an adapter. ``run()`` returns the text to show when the run worked (or
    None) and raises HostError (or Stop) when it did not; the host shows that text once."""

    def __init__(self, adapter, proc, values, python=None, secrets=()):
        self.adapter, self.proc, self.values = adapter, proc, dict(values)
        self.operation = proc["operation"]
        self.python = python
        self.secrets = list(secrets)

    # ------------------------------------------------------------------------------------------ dispatch
    def run(self, image=None, drawables=None):
        """The run's one message (or None); notices from the engine (paid results of a cancelled run) are
        part of it, whether the run worked or not. ``only_cost`` is True afterwards when the message says
        nothing but what the run cost: hosts then show it as status text, not in a message box (a box after
        every edit that worked interrupts the artist, and GIMP gives up on them after a few)."""
        self.notices = []
        self.agreed = None  # the most the artist agreed to pay in this run (a repeat within it is not asked again)
        self.last_cost = None
        self.only_cost = False
        try:
            text = self.dispatch(image, drawables)
        except hl.HostError as exc:
            self.heard({"notices": getattr(exc, "notices", None)})
            if self.notices:
                exc.message = u"\n\n".join([exc.message] + self.notices)
            raise
        text = u"\n\n".join([t for t in [text] if t] + self.notices) or None
        self.only_cost = bool(text) and text == self.last_cost
        return text

    def dispatch(self, image, drawables):
        if self.operation in ("edit", "variation"):
            return self.with_model_switch(lambda: self.run_region(image, drawables))
        if self.operation == "batch":
            return self.with_model_switch(self.run_batch)
        if self.operation == "generate":
            return self.with_model_switch(lambda: self.run_generate(image, drawables))
        if self.operation == "expand":
            return self.with_model_switch(lambda: self.run_expand(image, drawables))
        if self.operation == "pick":
            return self.run_pick(image, drawables)
        if self.operation == "next":
            return self.run_next(image, drawables)
        if self.operation == "history":
            return self.run_history(image, drawables)
        return self.run_settings()

    def heard(self, answer):
        """Keep the notices an engine answer carries, to show them with the run's message."""
        for notice in (answer or {}).get("notices") or []:
            text = hl.clean_multiline(notice.get("message") if isinstance(notice, dict) else notice, self.secrets)
            if text and text not in self.notices:
                self.notices.append(text)

    def with_model_switch(self, run):
        """A run whose model was shut down fails with the engine's text, which names the model and its live
        replacement. An interactive run is asked whether to switch; yes -> the replacement is remembered as
        the default model and the run repeated once with it."""
        try:
            return run()
        except ModelGone as gone:
            question = u"%s\n\nSwitch to %s for this run, and remember it as your default model?" % (
                hl.clean_line(gone.message, self.secrets), gone.replacement)
            if not (self.adapter.interactive and gone.replacement and
                    self.adapter.ask(question, u"OpenAI: model shut down", u"_Use %s" % gone.replacement)):
                raise
            replacement = gone.replacement
        try:
            hl.save_settings({"default_model": replacement}, python=self.python)
        except hl.HostError as exc:  # still use it now; say why it is not remembered
            self.notices.append(u"%s is used now but could not be remembered as your default model: %s" % (
                replacement, exc.message))
        self.values["model"] = replacement
        return run()

    # ----------------------------------------------------------------------------------- edit, variation
    def item(self, target, item_id, whole_layer):
        check_target(target)
        bounds, whole = region(target, self.operation_of_items(), whole_layer, self.adapter.interactive,
                               self.adapter.ask)
        return Item(item_id, target, bounds, whole)

    def operation_of_items(self):
        return (self.values.get("batch_operation") or "edit") if self.operation == "batch" else self.operation

    def run_region(self, image, drawables):
        check_prompt(self.operation, self.values)  # before any question about the region
        item = self.item(self.adapter.target(image, drawables), u"img-1", bool(self.values.get("whole_layer")))
        result = self.run_items([item])
        failures = hl.failed_items(result)
        if failures:
            raise self.engine_error(failures[0][1])
        return u"\n".join(t for t in [self.cost_text(result), hl.warnings_text(result, self.secrets),
                                      self.references_text(result)] if t)

    # ----------------------------------------------------------------------------------------------- cost
    def quality(self):
        return hl.to_text(self.values.get("quality") or u"auto")

    def plan_dict(self, operation, items):
        """The plan: the regions, and what the estimate needs so it is the job's (n, quality, the prompt)."""
        prompt = self.values.get("prompt" if operation != "variation" else "variation_prompt") or u""
        return {"operation": operation, "model": hl.to_text(self.values.get("model") or u""),
                "size_mode": self.values.get("size_mode") or "auto",
                "context_padding": float(self.values.get("context_padding", 0.25) or 0.0),
                "n": int(self.values.get("n") or 1), "quality": self.quality(), "prompt": hl.to_text(prompt),
                "items": [{"id": it.id, "layer": it.target.layer_rect, "selection_bounds": it.bounds}
                          for it in items]}

    def confirm_cost(self, answer, batch=False):
        """The estimate in words, once the run may go ahead. Above the artist's limit (Settings) an interactive
        run asks first and a script's run is refused unpaid; a batch is always asked in an interactive run,
        since it pays once per open image. Raises Stop when the artist says no."""
        estimate = (answer or {}).get("estimate") or {}
        words = hl.estimate_words(estimate)
        over = bool(estimate.get("over_limit"))
        if not over and not (batch and self.adapter.interactive):
            return words
        upper = estimate.get("usd_upper")
        if getattr(self, "agreed", None) is not None and upper is not None and upper <= self.agreed * 1.001:
            return words  # the same run again (its model was replaced), at no more than the artist agreed to
        what = hl.estimate_subject(estimate)
        limit = hl.dollars(estimate.get("max_cost") or 0.0)
        if not self.adapter.interactive:
            raise Refusal(u"Not sent: this run (%s) is estimated at %s, above your cost limit of %s." %
                          (what, words, limit),
                          u"Raise the limit (Filters > OpenAI > Settings, or the settings procedure's max_cost), or "
                          u"ask for fewer, smaller or lower-quality images.", "cost_limit")
        if over:
            question = (u"This run (%s) is estimated at %s.\n\nThat is above your limit of %s (Filters > OpenAI > "
                        u"Settings). Send it anyway?" % (what, words, limit))
            title = u"OpenAI: above your cost limit"
        else:
            question = u"Send this batch (%s) now? It is estimated at %s." % (what, words)
            title = u"OpenAI: batch cost"
        if not self.adapter.ask(question, title, u"_Send"):
            raise Stop(u"Nothing was sent, nothing was paid.")
        self.agreed = upper
        return words

    def cost_text(self, result):
        """The run's cost in one line (``OpenAI cost: $0.0532 (2 images, gpt-image-2, medium)``), for its
        message; the status text says it too."""
        images = sum(len(i.get("outputs") or []) for i in result.get("items") or [])
        model = result.get("model") or next((i.get("model") for i in result.get("items") or [] if i.get("model")),
                                            u"")
        line = hl.cost_line(result.get("cost") or hl.add_costs([i.get("cost") for i in result.get("items") or []]),
                            images, model, self.quality())
        if line is None:
            line = u"unknown (the server did not say what it used)" if images else u""
        self.last_cost = u"OpenAI cost: " + line if line else u""
        return self.last_cost

    def run_items(self, items):
        """Plan, export and the job in one engine session; then each image's results inserted."""
        operation = self.operation_of_items()
        previews = Previews(self.adapter, u"engine" if bool(self.values.get("add_mask", True)) else None)
        for it in items:
            previews.watch(it.id, it.target)
        previews.clear_stale()
        workdir, report = hl.make_workdir(), u""
        try:
            with hl.EngineSession(python=self.python) as session:
                # the progress (and GIMP's Cancel with it) shows once the engine knows the job folder
                answer = hl.plan(self.plan_dict(operation, items), workdir, session=session,
                                 on_sent=lambda: self.adapter.progress(0.0, u"OpenAI: planning"))
                self.heard(answer)
                price = self.confirm_cost(answer, batch=self.operation == "batch")
                job = job_options(self.proc, operation, self.values)
                job["model"] = answer.get("model") or job.get("model", u"")
                job["source_name"] = items[0].name if len(items) == 1 else u""
                hl.trace("export")
                job["items"] = self.export(items, answer, workdir, operation)
                hl.trace("exported")
                if operation == "edit" and self.operation == "edit":
                    self.add_references(job["items"], items[0].target, workdir)
                self.adapter.progress(0.0, u"OpenAI: sending %d request(s), %s" % (len(items), price))
                result = hl.run_job(job, workdir, on_progress=self.adapter.progress, session=session,
                                    on_partial=previews.show)
                self.heard(result)
                previews.end()  # the results take its place (or the run failed): gone before they go in
                gone = hl.model_gone(result)
                failed = gone or (not result.get("items") and result.get("error"))
                if not failed:  # in the session: killed while inserting, the engine cleans up and remembers
                    report = self.insert_items(items, result, job["model"], operation)
                    hl.trace("inserted")
            hl.trace("engine done")
            if not failed:  # after done: a Cancel now would cost nothing
                # what alignment and tone match corrected (in each parasite too) and what the run cost
                status = u"; ".join(r for r in [report, self.cost_text(result)] if r)
                if status:
                    self.adapter.status(status)
            if failed:
                raise self.engine_error(gone or result["error"])
            return result
        finally:
            previews.end()
            if not self.adapter.keep_workdir(workdir):
                hl.cleanup(workdir)

    def export(self, items, answer, workdir, operation):
        planned = dict((a["id"], a) for a in answer["items"])
        job_items = []
        for it in items:
            region_ = planned[it.id]
            place = region_["place"]
            entry = {"id": it.id, "image": it.id + ".png", "layer": it.target.layer_rect, "place": place,
                     "request": region_["request"], "target": region_["target"]}
            self.adapter.export_region(it.target, place, os.path.join(workdir, entry["image"]))
            if operation == "edit":
                entry["selection"] = it.id + "-sel.png"
                path = os.path.join(workdir, entry["selection"])
                if it.whole:
                    w, h = place["width"], place["height"]
                    hl.write_png(path, w, h, b"\xff" * (w * h), 1)
                else:
                    self.adapter.export_selection(it.target, place, path)
            job_items.append(entry)
        return job_items

    def insert_items(self, items, result, model, operation):
        """Each image's results above its layer, in one undo group per image; an image that cannot take them
        (closed, layer deleted) turns into that item's error, with its results kept in the history folder.
        Returns what alignment and tone match corrected, for the status bar.

        The progress ends first. GIMP's Cancel kills the plug-in wherever it is, and killed inside an undo
        group it leaves the image's undo "in inconsistent state" and says so; once the results have arrived
        (paid for, in history) inserting them takes a moment, and ending the progress takes the Cancel button
        away for that moment. A Cancel that GIMP handled before this point stops the run before any undo
        group opened: the engine then keeps the images and names them in the next run's message."""
        self.adapter.end_progress()  # no Cancel while the layers go in: GIMP would kill the plug-in mid-undo-group
        by_id = dict((it.id, it) for it in items)
        prompt = hl.to_text(self.values.get("prompt", u"")) if operation == "edit" else u"variation"
        reports = []
        for entry in result.get("items") or []:
            it = by_id.get(entry.get("id"))
            if it is None or not entry.get("ok"):
                continue
            outputs = entry.get("outputs") or []
            add_mask = bool(self.values.get("add_mask", True)) and (operation == "edit" or not it.whole)
            mask = (u"engine" if operation == "edit" else u"selection") if add_mask else None
            specs = layer_specs(outputs, prompt, entry.get("model") or model, mask, self.secrets,
                                cost=entry.get("cost"), quality=self.quality())
            try:
                if not self.adapter.alive(it.target.image, it.target.layer):
                    self.open_as_new_image(it, specs, group_name(prompt, len(outputs), self.secrets))
                    continue
                self.adapter.insert(it.target.image, it.target.layer, specs,
                                    group_name(prompt, len(outputs), self.secrets))
            except Exception as exc:  # one image's failure leaves the others' layers in place
                entry["ok"] = False
                entry["error"] = {"code": "insert_failed",
                                  "message": u"The results could not be added to the image: %s" %
                                             hl.redact(hl.to_text(exc), self.secrets),
                                  "hint": u"They are kept in the history folder.",
                                  "saved": [o.get("history_png") for o in outputs if o.get("history_png")]}
                continue
            reports.append(hl.reports_text(outputs, self.secrets))
        # what alignment and tone match corrected: shown while the run ends (once the engine is told done: a
        # status text brings GIMP's progress, and its Cancel, back), and in each parasite
        return u"; ".join(r for r in reports if r)

    def open_as_new_image(self, item, specs, group):
        """The image (or its layer) was closed while the request ran: the results open as a new image of their
        own, at their offsets from the region's corner, and the run's message says so."""
        x0, y0 = min(s.x for s in specs), min(s.y for s in specs)
        width = max(s.x + s.width for s in specs) - x0
        height = max(s.y + s.height for s in specs) - y0
        for spec in specs:
            spec.x, spec.y = spec.x - x0, spec.y - y0
            spec.mask = u"engine" if spec.mask else None  # the old image's selection is gone with it
        closed = not self.adapter.alive(item.target.image, None)
        image = self.adapter.new_image(width, height)
        self.adapter.insert(image, None, specs, group)
        self.adapter.show(image)
        results = u"its result" if len(specs) == 1 else u"its %d results" % len(specs)
        what = u"%s was closed" % item.name if closed else u"The layer was deleted from %s" % item.name
        self.notices.append(u"%s while the request ran, so %s opened as a new image." % (what, results))

    # ------------------------------------------------------------------------------------------ references
    def add_references(self, job_items, target, workdir):
        """The ``ref:`` layers, each scaled down to the item's request size (the engine sends no more), as the
        job items' ``references``; the names are kept for the run's message."""
        self.references_asked = []
        finder = getattr(self.adapter, "reference_layers", None)
        if finder is None or target is None or target.image is None:
            return
        found = finder(target.image, target.layer)
        if not found:
            return
        for entry in job_items:
            width, height = entry.get("target") or (1024, 1024)
            refs = []
            for k, (name, layer) in enumerate(found, 1):
                path = u"%s-ref-%d.png" % (entry["id"], k)
                self.adapter.export_reference(layer, int(width), int(height), os.path.join(workdir, path))
                refs.append({"path": path, "name": hl.clean_line(name, self.secrets)})
            entry["references"] = refs
        self.references_asked = [hl.clean_line(name, self.secrets) for name, _layer in found]

    def references_text(self, result):
        """Which ``ref:`` layers the model saw and which were left out (and why), from the engine's answer."""
        asked = getattr(self, "references_asked", None)
        if not asked:
            return u""
        sent, left_out = [], []
        for item in result.get("items") or []:
            report = item.get("references") or {}
            sent.extend(n for n in report.get("sent") or [] if n not in sent)
            left_out.extend(n for n in report.get("left_out") or [] if n not in left_out)
        lines = []
        if sent:
            lines.append(u"References sent: %s." % u", ".join(hl.clean_line(n, self.secrets) for n in sent))
        if left_out:
            lines.append(u"References left out: %s." % u"; ".join(hl.clean_line(n, self.secrets)
                                                                  for n in left_out))
        return u"\n".join(lines)

    # --------------------------------------------------------------------------------------- expand canvas
    def expand_job(self):
        """The job's margins (or aspect and the sides that may grow) from the dialog's Sides, Amount and
        Aspect ratio, refused before anything is exported when they grow nothing."""
        job = job_options(self.proc, "expand", self.values)
        for name in EXPAND_ONLY:
            job.pop(name, None)
        sides = EXPAND_SIDES.get(self.values.get("sides") or "all")
        if sides is None:
            raise Refusal(u"Unknown sides %r." % self.values.get("sides"), u"Choose the sides to grow.", "bad_sides")
        aspect = hl.clean_line(self.values.get("aspect") or u"")
        if aspect and aspect != "amount":
            job["aspect"] = aspect
            job["sides"] = [] if len(sides) == 4 else list(sides)
            return job
        amount = int(self.values.get("amount") or 0)
        if amount <= 0:
            raise Refusal(u"The amount is 0 px, so the canvas would not grow.",
                          u"Give the pixels to add on each chosen side, or choose an aspect ratio.", "nothing_to_expand")
        job["margins"] = dict((side, amount if side in sides else 0) for side in ("left", "top", "right", "bottom"))
        return job

    def checked_number(self, name, value, what):
        """``value`` as a float inside the manifest's range of ``name`` (the engine's bounds table, by a test),
        or one clear Refusal: a plain entry (GIMP 2.10's cost limit) or a script can hand over anything."""
        param = dict((p["name"], p) for p in self.proc["params"])[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number != number or not param["min"] <= number <= param["max"]:
            raise Refusal(u"%s %s is not allowed: it must be a number from %s to %s." % (
                what, hl.clean_line(hl.to_text(value))[:40], _plain_number(param["min"]), _plain_number(param["max"])),
                u"Type a number of dollars, such as 1.50.", "out_of_range")
        return number

    def expand_plan(self, job, canvas, image=None):
        """The plan whose estimate is the expansion's: the canvas's size, the margins (or aspect and sides) and
        what prices a tile; ``image``: the exported picture beside the plan (its transparent pixels need tiles)."""
        plan = dict((k, v) for k, v in job.items() if k in ("model", "quality", "prompt", "band", "margins",
                                                              "aspect", "sides"))
        plan.update(operation="expand", canvas=dict(canvas), n=1, size_mode="auto")
        if image:
            plan["image"] = image
        return plan

    def run_expand(self, image, drawables):
        """Expand Canvas: the canvas grows and the model paints the new area from the picture as it shows; the
        old layers keep their pixels and size, the new area (and canvas left transparent) is one layer with an
        editable mask (255 on what was painted), and the resize and that layer are ONE undo step."""
        if image is None or not self.adapter.alive(image, None):
            raise Refusal(u"There is no image to expand.", u"Open an image, then run again.", "no_image")
        target = self.adapter.target(image, drawables)
        if target.indexed:
            check_target(target)
        job = self.expand_job()
        workdir = hl.make_workdir()
        try:
            width, height = self.adapter.image_size(image)
            self.adapter.export_visible(image, os.path.join(workdir, "img-1.png"))
            job["items"] = [{"id": u"img-1", "image": u"img-1.png"}]
            job["source_name"] = target.name
            job["add_mask"] = True
            with hl.EngineSession(python=self.python) as session:
                # what every tile of the grown canvas should cost, asked about above the limit like an edit
                answer = hl.plan(self.expand_plan(job, {"width": int(width), "height": int(height)}, u"img-1.png"),
                                 workdir, session=session,
                                 on_sent=lambda: self.adapter.progress(0.0, u"OpenAI: planning"))
                self.heard(answer)
                price = self.confirm_cost(answer)
                job["model"] = answer.get("model") or job.get("model", u"")  # the model estimated is the one used
                self.adapter.progress(0.0, u"OpenAI: expanding the canvas, %s" % price)
                result = hl.run_job(job, workdir, on_progress=self.adapter.progress, session=session)
                self.heard(result)
                gone = hl.model_gone(result)
                item = (result.get("items") or [{}])[0]
                if gone or not item.get("ok"):
                    raise self.engine_error(gone or item.get("error") or result.get("error"))
                if not self.adapter.alive(image, None):
                    raise hl.HostError(u"The image was closed while the request ran.",
                                       u"The painted area is kept in the history folder.", "image_closed",
                                       [o.get("history_png") for o in item.get("outputs") or []
                                        if o.get("history_png")])
                output = item["outputs"][0]
                prompt = hl.to_text(self.values.get("prompt") or u"") or u"expanded canvas"
                model = item.get("model") or result.get("model") or job.get("model", u"")
                share = hl.cost_share(item.get("cost"), 1, model, self.quality())
                spec = LayerSpec(output, hl.layer_name(prompt, 1, 1, secrets=self.secrets).rsplit(u" (", 1)[0],
                                 hl.parasite_data(prompt, model, output, self.secrets, cost=share), u"engine")
                canvas, old = item["canvas"], item["old"]
                self.adapter.expand_canvas(image, int(canvas["width"]), int(canvas["height"]), int(old["x"]),
                                           int(old["y"]), spec)
            cost = self.cost_text(result)
            self.adapter.status(u"; ".join(t for t in [u"OpenAI: canvas %dx%d \u2192 %dx%d" % (
                width, height, int(canvas["width"]), int(canvas["height"])), cost] if t))
            return u"\n".join(t for t in [cost, hl.warnings_text(result, self.secrets)] if t) or None
        finally:
            if not self.adapter.keep_workdir(workdir):
                hl.cleanup(workdir)

    def engine_error(self, error):
        error = error or {}
        if error.get("code") == "model_not_found" and error.get("replacement"):
            return ModelGone(error)
        return hl.HostError.from_engine(error)

    # ---------------------------------------------------------------------------------------------- batch
    def run_batch(self):
        """Every open image in one engine job; each image's results in its own undo group; a summary."""
        operation = self.operation_of_items()
        check_prompt(operation, self.values)
        items, skipped, names = [], [], {}
        targets = self.adapter.open_targets()
        whole = self.whole_layers_too([t for t in targets if t.selection is None and t.image is not None])
        for number, target in enumerate(targets, 1):
            try:
                check_target(target)
                if target.selection is None and not whole:
                    skipped.append(u"\u2013 %s: skipped (nothing selected)" % target.name)
                    continue
                # an image without a selection was chosen to go whole: no question per image
                item = self.item(target, u"img-%d" % number, True)
                items.append(item)
                names[item.id] = target.name
            except hl.HostError as exc:
                skipped.append(u"\u2717 %s: %s" % (target.name, hl.describe_error(exc, self.secrets)))
        if not items:
            raise Refusal(u"No open image can be processed.\n" + u"\n".join(skipped),
                          u"Open an RGB or grayscale image and select an area, then run again.", "nothing_to_do")
        result = self.run_items(items)
        text = hl.summary(result, names, self.secrets, self.quality())
        if skipped:
            text += u"\n" + u"\n".join(skipped)
        if all(not i.get("ok") for i in result.get("items") or []):
            raise hl.HostError(text, u"", "batch_failed")
        return text

    def whole_layers_too(self, unselected):
        """Whether the images with nothing selected are edited whole: as the artist chose, asked once for all
        of them when the choice is "ask" (a script's run is never asked: they are skipped, not paid for)."""
        choice = self.values.get("no_selection") or "ask"
        if choice != "ask" or not unselected:
            return choice == "whole layer"
        if not self.adapter.interactive:
            return False
        names = u", ".join(t.name for t in unselected[:5]) + (u", \u2026" if len(unselected) > 5 else u"")
        return self.adapter.ask(u"%d open image(s) have nothing selected (%s). Edit their whole layers too? A "
                                u"larger area costs more; No skips them." % (len(unselected), names),
                                u"OpenAI: images without a selection", u"_Edit whole layers")

    # ------------------------------------------------------------------------------------------- generate
    def run_generate(self, image, drawables):
        check_prompt("generate", self.values)
        target = self.adapter.target(image, drawables) if image is not None else None
        new_image = target is None or target.indexed or self.values.get("target") == "new image"
        previews = Previews(self.adapter)
        if target is not None and target.image is not None:
            on_top = Target(target.image, None, target.name)  # over the image's top, centred like the result

            def centred(line):
                width, height = self.adapter.image_size(on_top.image)
                return (width - int(line["width"])) // 2, (height - int(line["height"])) // 2
            previews.watch(u"generate", on_top, centred)
            previews.clear_stale()
            if new_image:  # a new image has no canvas yet to show a preview on
                previews.targets.clear()
        workdir = hl.make_workdir()
        try:
            job = job_options(self.proc, "generate", self.values)
            job["items"] = []
            if target is not None and target.image is not None:  # ref: layers, at most the size generated
                job_item = {"id": u"generate", "target": list(generated_size(job))}
                self.add_references([job_item], target, workdir)
                if job_item.get("references"):
                    job["items"] = [{"id": u"generate", "references": job_item["references"]}]
            if not new_image and "size" not in job:  # the canvas's shape, filled (the engine scales to cover)
                width, height = self.adapter.image_size(target.image)
                job["canvas"] = {"width": int(width), "height": int(height)}
            with hl.EngineSession(python=self.python) as session:
                plan = dict(self.plan_dict("generate", []), size=job.get("size") or u"auto")
                if "canvas" in job:
                    plan["canvas"] = job["canvas"]
                answer = hl.plan(plan, workdir, session=session)
                self.heard(answer)
                price = self.confirm_cost(answer)
                job["model"] = answer.get("model") or job.get("model", u"")  # the model estimated is the one used
                result = hl.run_job(job, workdir, on_progress=self.adapter.progress, session=session,
                                    on_partial=previews.show,
                                    on_sent=lambda: self.adapter.progress(0.0, u"OpenAI: generating, %s" % price))
                self.heard(result)
                previews.end()
                item = (result.get("items") or [{}])[0]
                if item.get("ok"):  # in the session: killed while inserting, the engine cleans up and remembers
                    self.adapter.end_progress()  # no Cancel while the layers go in (see insert_items)
                    text = self.insert_generated(result, job, target, new_image)
            if item.get("ok"):
                if self.last_cost:  # after done (a status text brings GIMP's progress, and its Cancel, back)
                    self.adapter.status(self.last_cost)
                return u"\n".join(t for t in [text, self.references_text(result)] if t) or None
            raise self.engine_error(item.get("error") or result.get("error"))
        finally:
            previews.end()
            hl.cleanup(workdir)

    def insert_generated(self, result, job, target, new_image):
        """The generated images as layers: a new image, or on top of the open one (centred)."""
        item = (result.get("items") or [{}])[0]
        outputs = item.get("outputs") or []
        model = item.get("model") or result.get("model") or job.get("model", u"")
        prompt = hl.to_text(self.values.get("prompt", u""))
        if new_image:
            width = max(int(o["width"]) for o in outputs)
            height = max(int(o["height"]) for o in outputs)
            image, anchor = self.adapter.new_image(width, height), None
            for o in outputs:
                o["x"], o["y"] = 0, 0
        elif not self.adapter.alive(target.image, None):  # closed while the request ran
            image, anchor = self.adapter.new_image(max(int(o["width"]) for o in outputs),
                                                   max(int(o["height"]) for o in outputs)), None
            for o in outputs:
                o["x"], o["y"] = 0, 0
            new_image = True
            self.notices.append(u"%s was closed while the request ran; the result(s) opened as a new image."
                                % target.name)
        else:
            image, anchor = target.image, None  # on top of the image, never inside a group it has
            width, height = self.adapter.image_size(image)
            for o in outputs:  # centred in the image
                o["x"] = (width - int(o["width"])) // 2
                o["y"] = (height - int(o["height"])) // 2
        self.adapter.insert(image, anchor, layer_specs(outputs, prompt, model, None, self.secrets,
                                                       cost=item.get("cost"), quality=self.quality()),
                            group_name(prompt, len(outputs), self.secrets))
        if new_image:
            self.adapter.show(image)
        return u"\n".join(t for t in [self.cost_text(result), hl.warnings_text(result, self.secrets)] if t) or None

    # ------------------------------------------------------------------------------------------- settings
    def run_settings(self):
        """Save the settings as the dialog shows them (it opens with what is saved; an empty server URL means
        OpenAI, an empty model automatic, an empty folder the default), store a new key (asked in a hidden
        field), and test the server now."""
        # A dialog that opened with what is saved (adapter.shows_saved_settings) means every field as shown,
        # empty meaning the default (OpenAI, automatic, the default folder). Anywhere else (a script, a dialog
        # that shows last values) an empty field keeps what is saved.
        as_shown = self.adapter.interactive and self.adapter.shows_saved_settings
        changes = {}
        for name, setting in (("base_url", "base_url"), ("default_model", "default_model"),
                              ("history_folder", "history_dir")):
            value = hl.clean_line(self.values.get(name) or u"")
            if value or (as_shown and name in self.values):
                changes[setting] = value
        # the cost limit: as shown in the dialog; a script's default (the manifest's) keeps what is saved
        limit = self.values.get("max_cost")
        default = dict((p["name"], p.get("default")) for p in self.proc["params"]).get("max_cost")
        if limit is not None:
            limit = self.checked_number("max_cost", limit, u"The cost limit")
        if limit is not None and (as_shown or float(limit) != float(default if default is not None else -1)):
            changes["max_cost"] = float(limit)
        lines = []
        if changes:
            hl.save_settings(changes, python=self.python)
            shown = {"base_url": (u"server", u"OpenAI"), "default_model": (u"model", u"automatic"),
                     "history_dir": (u"history folder", u"the default")}
            lines.append(u"Settings saved: %s." % u"; ".join(
                (u"ask first above %s" % hl.dollars(changes[k])) if k == "max_cost" else
                u"%s %s" % (shown[k][0], changes[k] or shown[k][1])
                for k in ("base_url", "default_model", "history_dir", "max_cost") if k in changes))
        if self.values.get("change_key"):
            if not self.adapter.interactive:
                raise Refusal(u"The API key can only be entered interactively.",
                              u"Run Filters > OpenAI > Settings from the menu, or run 'gimp-openai key set' in a "
                              u"terminal.", "key_interactive_only")
            key = self.adapter.ask_secret(u"Paste your OpenAI API key (it is stored in the system keyring or a "
                                          u"private file, never shown):")
            if key and key.strip():
                lines.append(u"API key stored in %s." % hl.store_key(key.strip(), python=self.python))
            else:
                lines.append(u"API key unchanged.")
        if self.values.get("test_connection"):
            # what was saved stays saved; a failed test is part of this one report, not a second message
            ok, text, models = hl.test_connection(python=self.python)
            if ok:
                self.adapter.models_listed(models)
            lines.append(hl.redact(text, self.secrets))
        return u"OpenAI settings:\n" + u"\n".join(lines) if lines else u"Nothing was changed."

    # ------------------------------------------------------------------------------- pick, next result
    def results(self, image, drawables):
        """(group, layers) of the result group the artist is on, or a Refusal that says where to click."""
        found = self.adapter.result_group(image, drawables) if image is not None else None
        if not found or not found[1]:
            raise Refusal(u"The active layer is not a group of OpenAI results.",
                          u"Click a group named \u201cOpenAI: \u2026 (N results)\u201d, or a layer inside it, "
                          u"in the Layers dialog, then run again.", "not_results")
        return found

    def showing(self, layers):
        """The 0-based index of the result on show: the first visible one (results of a run show only one)."""
        for k, layer in enumerate(layers):
            if self.adapter.is_visible(layer):
                return k
        return 0

    def run_pick(self, image, drawables):
        """Keep one result of a group and remove the others, in one undo step: the one chosen in the host's
        side-by-side view (interactive), the ``index``-th (1 = top; scripts), or the one showing (0)."""
        group, layers = self.results(image, drawables)
        current = self.showing(layers)
        index = int(self.values.get("index") or 0)
        if index > len(layers):
            raise Refusal(u"This group holds %d results; there is no result %d." % (len(layers), index),
                          u"Pass an index from 1 to %d, or 0 for the one showing." % len(layers), "no_such_result")
        chosen = index - 1 if index else current
        if self.adapter.interactive and not index and hasattr(self.adapter, "choose_result"):
            chosen = self.adapter.choose_result(image, group, layers, current)
            if chosen is None:
                raise Stop()
        kept = layers[chosen]
        self.adapter.keep_result(image, group, kept)
        others = len(layers) - 1
        self.adapter.status(u"Kept %s%s" % (hl.clean_line(self.adapter.layer_label(kept), self.secrets),
                                             u"; %d other result(s) removed (Edit > Undo brings them back)" % others
                                             if others else u""))
        return None

    def run_next(self, image, drawables):
        """Show the next result of the group and hide the one showing (after the last: the first again), so
        an artist without a side-by-side view compares them in place, one key press each."""
        group, layers = self.results(image, drawables)
        k = (self.showing(layers) + 1) % len(layers)
        self.adapter.show_only(image, layers, k)
        self.adapter.status(u"Showing %d of %d: %s" % (k + 1, len(layers),
                                                       hl.clean_line(self.adapter.layer_label(layers[k]),
                                                                     self.secrets)))
        return None

    # --------------------------------------------------------------------------------------------- history
    def run_history(self, image, drawables):
        """Bring back a past result from the history folder, without a new request: at its original place in
        this image when it fits there, else as a new image; one undo step."""
        alive = image is not None and self.adapter.alive(image, None)
        entry_id = hl.clean_line(self.values.get("entry") or u"")
        if not entry_id:
            chooser = getattr(self.adapter, "choose_history", None)
            interactive = self.adapter.interactive and chooser is not None
            listing = hl.history_list(python=self.python, limit=HISTORY_SHOWN if interactive else 1,
                                      thumbnails=interactive)
            entries = listing.get("entries") or []
            if not entries:
                raise Refusal(u"The history folder holds no results yet%s." % (
                    u" (%s)" % hl.to_text(listing["folder"]) if listing.get("folder") else u""),
                    u"Results are kept there from the first run on; Settings shows where it is.", "empty_history")
            if interactive:
                entry_id = chooser(listing, image if alive else None)
                if not entry_id:
                    raise Stop()
            else:
                entry_id = entries[0]["id"]
        workdir = hl.make_workdir()
        try:
            layer = hl.history_layer(entry_id, os.path.join(workdir, "history-layer.png"), python=self.python)
            return self.insert_history(image if alive else None, drawables, layer)
        finally:
            hl.cleanup(workdir)

    def insert_history(self, image, drawables, layer):
        entry = layer.get("entry") or {}
        width, height = int(layer["width"]), int(layer["height"])
        output = {"layer_png": layer["layer_png"], "mask_png": layer.get("mask_png"), "x": int(layer.get("x", 0)),
                  "y": int(layer.get("y", 0)), "width": width, "height": height, "history_png": entry.get("image"),
                  "request_id": entry.get("request_id"), "path": entry.get("operation"),
                  "notes": u"from history"}
        prompt = hl.to_text(entry.get("prompt") or (u"variation" if hl.to_text(entry.get("operation")).startswith(
            u"variation") else u""))
        k, n = entry.get("k") or 1, entry.get("n") or 1
        name = hl.layer_name(prompt, k, n, path=entry.get("operation"), secrets=self.secrets)
        # the mask the run gave it (history keeps it beside the image); none for entries kept without one
        spec = LayerSpec(output, name, hl.parasite_data(prompt, entry.get("model") or u"", output, self.secrets),
                         u"engine" if layer.get("mask_png") else None)
        differs = hl.clean_line(layer.get("notes") or u"", self.secrets)
        fits = False
        if image is not None:
            canvas_w, canvas_h = self.adapter.image_size(image)
            if layer.get("placed"):
                fits = (spec.x >= 0 and spec.y >= 0 and spec.x + width <= canvas_w and spec.y + height <= canvas_h)
            elif width <= canvas_w and height <= canvas_h:  # a generation: centred, as Generate puts it
                spec.x, spec.y = (canvas_w - width) // 2, (canvas_h - height) // 2
                fits = True
        if fits:
            target = self.adapter.target(image, drawables)
            anchor = target.layer if target.kind == "layer" else None
            self.adapter.insert(image, anchor, [spec], None)
            where = u"at its place (%d, %d)" % (spec.x, spec.y) if layer.get("placed") else u"centred"
            self.adapter.status(u"%s inserted %s, from history (no new request)%s" % (
                name, where, u"; " + differs if differs else u""))
            return None
        spec.x, spec.y = 0, 0
        new = self.adapter.new_image(width, height)
        self.adapter.insert(new, None, [spec], None)
        self.adapter.show(new)
        if image is None:
            return None
        why = (u"its place (%d\u00d7%d at %d, %d) is outside this image" % (width, height, int(layer.get("x", 0)),
                                                                          int(layer.get("y", 0)))
               if layer.get("placed") else u"it is larger than this image")
        return u"%s opened as a new image: %s." % (name, why)


#: How many of the newest results a history chooser shows (each with a thumbnail made once and cached).
HISTORY_SHOWN = 200
