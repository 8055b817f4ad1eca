"""A fake of GIMP 2.10's gimpfu: register() validates and records like the real one, main() installs the
procedures into the fake pdb, and _run() follows gimpfu's flow (non-interactive: call; interactive: the
'dialog' (``DIALOG`` hook, default: last values), remember the values in gimpshelf, then call)."""

from __future__ import absolute_import

import gimp
import gimpshelf
from gimpenums import *  # noqa: F401,F403
from gimpenums import RUN_INTERACTIVE, RUN_NONINTERACTIVE, RUN_WITH_LAST_VALS  # noqa: F401  (gimpfu re-exports these)

pdb = gimp.pdb

(PF_INT8, PF_INT16, PF_INT32, PF_FLOAT, PF_STRING, PF_COLOR, PF_REGION, PF_DISPLAY, PF_IMAGE, PF_LAYER,
 PF_CHANNEL, PF_DRAWABLE, PF_TOGGLE, PF_SLIDER, PF_SPINNER, PF_FONT, PF_FILE, PF_BRUSH, PF_PATTERN,
 PF_GRADIENT, PF_RADIO, PF_TEXT, PF_PALETTE, PF_FILENAME, PF_DIRNAME, PF_OPTION, PF_VECTORS,
 PF_ITEM) = range(28)
PF_INT, PF_BOOL, PF_COLOUR = PF_INT32, PF_TOGGLE, PF_COLOR

PLUGIN = 0
_registered_plugins_ = {}

#: Tests set this to ``lambda proc_name, values: new_values`` to play the user in the dialog.
DIALOG = None


class CancelError(Exception):
    pass


def _letters_ok(name):
    return bool(name) and all(c.isalnum() or c in "-_" for c in name)


def register(proc_name, blurb, help, author, copyright, date, label, imagetypes, params, results, function,
             menu=None, domain=None, on_query=None, on_run=None):
    """Validate like gimpfu does and remember the registration."""
    if not proc_name.startswith(("python-", "python_", "extension-", "plug-in-", "file-")):
        proc_name = "python-fu-" + proc_name
    if proc_name in _registered_plugins_:
        raise ValueError("procedure %s already registered" % proc_name)
    for ent in params:
        if len(ent) < 4:
            raise ValueError("parameter definition must contain at least 4 elements (%s given: %r)"
                             % (len(ent), ent))
        if not isinstance(ent[0], int):
            raise ValueError("parameter types must be integers")
        if not _letters_ok(ent[1]):
            raise ValueError("parameter name contains illegal characters: %r" % ent[1])
        if ent[0] in (PF_SPINNER, PF_SLIDER) and (len(ent) < 5 or len(ent[4]) != 3):
            raise ValueError("%s needs (min, max, step)" % ent[1])
        if ent[0] == PF_RADIO and (len(ent) < 5 or not all(len(v) == 2 for v in ent[4])):
            raise ValueError("%s needs ((label, value), ...)" % ent[1])
        if ent[0] == PF_OPTION and (len(ent) < 5 or not isinstance(ent[3], int)):
            raise ValueError("%s needs an int default and a list of labels" % ent[1])
    for ent in results:
        if len(ent) < 3:
            raise ValueError("result definition must contain at least 3 elements")
    _registered_plugins_[proc_name] = (blurb, help, author, copyright, date, label, imagetypes, PLUGIN,
                                       params, results, function, menu, domain, on_query, on_run)


def _query():
    for name, reg in _registered_plugins_.items():
        blurb, help_, author, copyright_, date, label, imagetypes, ptype, params, results, _f, menu = reg[:12]
        pdb_params = [(PF_INT32, "run-mode", "The run mode")] + [tuple(p[:3]) for p in params]
        gimp.install_procedure(name, blurb, help_, author, copyright_, date, label, imagetypes, ptype,
                               pdb_params, results)
        if menu:
            gimp.menu_register(name, menu)


def _get_defaults(proc_name):
    """gimpfu's own: the last values remembered in gimpshelf (image and drawable first for image procedures),
    else the registration's defaults."""
    key = "python-fu-save--" + proc_name
    if key in gimpshelf.shelf:
        return gimpshelf.shelf[key]
    return [p[3] for p in _registered_plugins_[proc_name][8]]


def _set_defaults(proc_name, defaults):
    gimpshelf.shelf["python-fu-save--" + proc_name] = defaults


def _run(proc_name, params):
    run_mode = params[0]
    func = _registered_plugins_[proc_name][10]
    if run_mode == RUN_NONINTERACTIVE:
        return func(*params[1:])
    values = list(_get_defaults(proc_name))
    # image/drawable arguments come from GIMP, never from remembered values
    reg_params = _registered_plugins_[proc_name][8]
    for i, p in enumerate(reg_params):
        if p[0] in (PF_IMAGE, PF_DRAWABLE, PF_LAYER) and i + 1 < len(params):
            values[i] = params[i + 1]
    if run_mode == RUN_INTERACTIVE:
        # gimpfu's _interact: "short circuit for no parameters": nothing beyond the image and drawable, no dialog
        if DIALOG is not None and any(p[0] not in (PF_IMAGE, PF_DRAWABLE, PF_LAYER) for p in reg_params):
            try:
                values = list(DIALOG(proc_name, values))
            except CancelError:
                return None
        _set_defaults(proc_name, values)  # as gimpfu's run_script: remembered before the function runs
    return func(*values)


def main():
    gimp.main(None, None, _query, _run)


def N_(text):
    return text


def gettext_install(*args, **kwargs):
    pass
