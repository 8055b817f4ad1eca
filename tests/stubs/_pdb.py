"""The fake ``pdb``: the procedures the plug-in calls, with GIMP's conventions (no run mode, RuntimeError).

Registered plug-in procedures are callable as ``pdb.python_fu_openai_edit_selection(image, drawable, ...)``
(non-interactive unless ``run_mode=`` is given), which is how GIMP scripts call them.
"""

from __future__ import absolute_import, division

import os

from gimpenums import (
    BASE_OF,
    CHANNEL_OP_ADD,
    CHANNEL_OP_INTERSECT,
    CHANNEL_OP_REPLACE,
    CHANNEL_OP_SUBTRACT,
    GRAY,
    GRAY_IMAGE,
    GRAYA_IMAGE,
    INDEXED,
    INDEXED_IMAGE,
    INDEXEDA_IMAGE,
    RGB,
    RGB_IMAGE,
    RGBA_IMAGE,
    RUN_NONINTERACTIVE,
)


class PDB(object):
    def __init__(self, gimp):
        self._gimp = gimp

    # ----------------------------------------------------------------------------- plug-in procedures
    def __getitem__(self, name):
        if name not in self._gimp.state.procedures:
            raise KeyError(name)
        return _Procedure(self._gimp, name)

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        name = attr.replace("_", "-")
        if name in self._gimp.state.procedures:
            return _Procedure(self._gimp, name)
        raise AttributeError("pdb has no procedure %r" % name)

    # ---------------------------------------------------------------------------------- selection
    def gimp_selection_bounds(self, image):
        sel = image.selection.pixels[..., 0]
        ys, xs = _np().nonzero(sel)
        if len(xs) == 0:
            return (0, 0, 0, image.width, image.height)
        return (1, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

    def gimp_selection_is_empty(self, image):
        return int(not image.selection.pixels.any())

    def gimp_selection_value(self, image, x, y):
        return int(image.selection.pixels[y, x, 0])

    def gimp_selection_none(self, image):
        image.selection.pixels[...] = 0
        image._record("select none")

    def gimp_selection_all(self, image):
        image.selection.pixels[...] = 255
        image._record("select all")

    def gimp_image_select_rectangle(self, image, operation, x, y, width, height):
        np = _np()
        shape = np.zeros((image.height, image.width), np.float64)
        x1, y1 = max(0, int(x)), max(0, int(y))
        x2, y2 = min(image.width, int(x + width)), min(image.height, int(y + height))
        if x2 > x1 and y2 > y1:
            shape[y1:y2, x1:x2] = 255
        _combine(image, shape, operation)

    def gimp_image_select_ellipse(self, image, operation, x, y, width, height):
        """Antialiased like GIMP's default: edge pixels get partial values (4x4 supersampling)."""
        np = _np()
        sub = 4
        offs = (np.arange(sub) + 0.5) / sub
        cx, cy, rx, ry = x + width / 2.0, y + height / 2.0, width / 2.0, height / 2.0
        ys, xs = np.mgrid[0:image.height, 0:image.width]
        cover = np.zeros((image.height, image.width), np.float64)
        for oy in offs:
            for ox in offs:
                cover += (((xs + ox - cx) / rx) ** 2 + ((ys + oy - cy) / ry) ** 2) <= 1.0
        _combine(image, np.round(cover / (sub * sub) * 255.0), operation)

    # ------------------------------------------------------------------------------- undo, context
    def gimp_image_undo_group_start(self, image):
        if image.undo_depth == 0:
            image._open_group = []
        image.undo_depth += 1

    def gimp_image_undo_group_end(self, image):
        if image.undo_depth == 0:
            raise RuntimeError("gimp-image-undo-group-end: no undo group is open")
        image.undo_depth -= 1
        if image.undo_depth == 0:
            if image._open_group:
                image.undo_steps.append(image._open_group)
            image._open_group = None

    def gimp_image_undo_disable(self, image):
        image.undo_enabled = False

    def gimp_image_undo_enable(self, image):
        image.undo_enabled = True
        image.undo_steps = []

    def gimp_image_undo_freeze(self, image):
        image.undo_frozen += 1

    def gimp_image_undo_thaw(self, image):
        if image.undo_frozen == 0:
            raise RuntimeError("gimp-image-undo-thaw: the image's undo is not frozen")
        image.undo_frozen -= 1

    def gimp_image_is_dirty(self, image):
        return int(bool(image.dirty))

    def gimp_image_clean_all(self, image):
        image.dirty = False

    def gimp_context_push(self):
        self._gimp.state.context_depth += 1

    def gimp_context_pop(self):
        if self._gimp.state.context_depth == 0:
            raise RuntimeError("gimp-context-pop: there is no context to pop")
        self._gimp.state.context_depth -= 1

    # ----------------------------------------------------------------------- progress, messages
    def gimp_progress_init(self, message, display=None):
        self._gimp.progress_init(message)

    def gimp_progress_update(self, fraction):
        self._gimp.progress_update(fraction)

    def gimp_progress_set_text(self, message):
        self._gimp.state.progress.append(("text", message))

    def gimp_progress_pulse(self):
        self._gimp.state.progress.append(("pulse", None))

    def gimp_progress_end(self):
        self._gimp.state.progress.append(("end", None))

    def gimp_message(self, message):
        self._gimp.message(message)

    def gimp_displays_flush(self):
        self._gimp.displays_flush()

    # ----------------------------------------------------------------------------- images, items
    def gimp_image_new(self, width, height, base_type):
        return self._gimp.Image(width, height, base_type)

    def gimp_image_delete(self, image):
        self._gimp.delete_image(image)

    def gimp_display_new(self, image):
        return self._gimp.Display(image)

    def gimp_image_list(self):
        images = self._gimp.image_list()
        return len(images), [i.ID for i in images]

    def gimp_image_base_type(self, image):
        return image.base_type

    def gimp_image_get_filename(self, image):
        return image.filename

    def gimp_image_get_name(self, image):
        return image.name

    def gimp_image_set_active_layer(self, image, layer):
        image.active_layer = layer

    def gimp_image_get_active_drawable(self, image):
        return image.active_layer

    def gimp_image_insert_layer(self, image, layer, parent, position):
        image.insert_layer(layer, parent, position)

    def gimp_image_remove_layer(self, image, layer):
        image.remove_layer(layer)

    def gimp_image_is_valid(self, image):
        return int(image in self._gimp.state.images)

    def gimp_item_is_valid(self, item):
        image = getattr(item, "image", None)
        return int(image is not None and image in self._gimp.state.images and item in image._all_items()
                   and not getattr(item, "_deleted", False))

    def gimp_image_get_item_position(self, image, item):
        siblings = image._siblings(getattr(item, "parent", None))
        if item not in siblings:
            raise RuntimeError("Item '%s' is not in image %d" % (item.name, image.ID))
        return siblings.index(item)

    def gimp_image_reorder_item(self, image, item, parent, position):
        """Move ``item`` to ``parent`` (None: the image's top level) at ``position``, as GIMP 2.10 does."""
        if parent is not None and (not parent.is_group or parent not in image._all_items()):
            raise RuntimeError("gimp-image-reorder-item: the parent is not a layer group of this image")
        if parent is item or (item.is_group and parent is not None and parent in _descendants(item)):
            raise RuntimeError("gimp-image-reorder-item: an item cannot go inside itself")
        image._siblings(item.parent).remove(item)
        siblings = image._siblings(parent)
        siblings.insert(max(0, min(position, len(siblings))), item)
        item.parent = parent
        image._record("reorder %s" % item.name)

    def gimp_item_set_visible(self, item, visible):
        item.visible = bool(visible)
        image = getattr(item, "image", None)
        if image is not None and item in image._all_items():
            image._record("visibility %s" % item.name)

    def gimp_item_get_visible(self, item):
        return int(bool(item.visible))

    def gimp_item_get_parent(self, item):
        return getattr(item, "parent", None)

    def gimp_item_is_group(self, item):
        return int(bool(getattr(item, "is_group", False)))

    def gimp_item_is_layer(self, item):
        return int(isinstance(item, self._gimp.Layer))

    def gimp_item_is_layer_mask(self, item):
        return int(isinstance(item, self._gimp.Channel) and item.layer is not None)

    def gimp_item_is_channel(self, item):
        return int(isinstance(item, self._gimp.Channel))

    def gimp_item_delete(self, item):
        if item.image is not None and item in item.image._all_items():
            raise RuntimeError("Item '%s' (%d) is attached to an image: remove it first" % (item.name, item.ID))
        item._deleted = True

    def gimp_item_set_name(self, item, name):
        item.name = name

    def gimp_item_get_name(self, item):
        return item.name

    def gimp_layer_new(self, image, width, height, type_, name, opacity, mode):
        return self._gimp.Layer(image, name, width, height, type_, opacity, mode)

    def gimp_layer_group_new(self, image):
        return self._gimp.GroupLayer(image)

    def gimp_layer_from_mask(self, mask):
        return mask.layer

    def gimp_layer_add_mask(self, layer, mask):
        layer.add_mask(mask)

    def gimp_layer_create_mask(self, layer, mask_type):
        return layer.create_mask(mask_type)

    def gimp_drawable_is_indexed(self, drawable):
        return int(drawable.is_indexed)

    def gimp_drawable_is_gray(self, drawable):
        return int(drawable.is_gray)

    def gimp_drawable_is_rgb(self, drawable):
        return int(drawable.is_rgb)

    def gimp_drawable_has_alpha(self, drawable):
        return int(drawable.has_alpha)

    def gimp_drawable_type(self, drawable):
        return drawable.type

    def gimp_drawable_offsets(self, drawable):
        return drawable.offsets

    def gimp_image_get_colormap(self, image):
        data = bytearray(image.colormap or b"")
        return len(data), list(data)

    # ------------------------------------------------------------------------------------- files
    def file_png_save(self, image, drawable, filename, raw_filename, interlace=0, compression=9, bkgd=0,
                      gama=0, offs=0, phys=0, time=0):
        """Writes the drawable's own pixels (its size, its type) like GIMP's PNG export of one layer."""
        from PIL import Image as PILImage
        if drawable.image is not image:
            raise RuntimeError("file-png-save: the drawable does not belong to the image")
        px = drawable.pixels
        mode = {RGB_IMAGE: "RGB", RGBA_IMAGE: "RGBA", GRAY_IMAGE: "L", GRAYA_IMAGE: "LA"}.get(drawable.type)
        if mode is None:
            im = PILImage.frombytes("P", (drawable.width, drawable.height), px[..., 0].tobytes())
            im.putpalette(list(bytearray(image.colormap or b"")))
        else:
            im = PILImage.frombytes(mode, (drawable.width, drawable.height), px.tobytes())
        try:
            im.save(filename, "PNG", compress_level=int(compression))
        except (IOError, OSError) as exc:
            raise RuntimeError("Could not open '%s' for writing: %s" % (filename, exc))

    def file_png_save_defaults(self, image, drawable, filename, raw_filename):
        self.file_png_save(image, drawable, filename, raw_filename)

    def gimp_file_load_layer(self, image, filename):
        """A new layer (not yet inserted) converted to the image's base type, named after the file."""
        from PIL import Image as PILImage
        np = _np()
        try:
            im = PILImage.open(filename)
            im.load()
        except (IOError, OSError) as exc:
            raise RuntimeError("Could not open '%s' for reading: %s" % (filename, exc))
        alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        if image.base_type == RGB:
            im, ltype = (im.convert("RGBA"), RGBA_IMAGE) if alpha else (im.convert("RGB"), RGB_IMAGE)
        elif image.base_type == GRAY:
            im, ltype = (im.convert("LA"), GRAYA_IMAGE) if alpha else (im.convert("L"), GRAY_IMAGE)
        else:
            raise RuntimeError("gimp-file-load-layer: loading into an indexed image is not supported here")
        layer = self._gimp.Layer(image, os.path.basename(filename), im.size[0], im.size[1], ltype)
        layer.pixels[...] = np.asarray(im, np.uint8).reshape(layer.pixels.shape)
        return layer

    def gimp_file_load(self, filename, raw_filename):
        from PIL import Image as PILImage
        im = PILImage.open(filename)
        image = self._gimp.Image(im.size[0], im.size[1], GRAY if im.mode in ("L", "LA") else RGB)
        layer = self.gimp_file_load_layer(image, filename)
        image.insert_layer(layer)
        image.filename = filename
        image.undo_steps = []
        return image


class _Procedure(object):
    """A registered plug-in procedure called through the pdb: run mode first, defaulting to non-interactive,
    argument count checked, and any failure surfacing as RuntimeError as GIMP reports it to callers."""

    def __init__(self, gimp, name):
        self._gimp, self.proc_name = gimp, name

    def __call__(self, *args, **kwargs):
        info = self._gimp.state.procedures[self.proc_name]
        run_mode = kwargs.pop("run_mode", RUN_NONINTERACTIVE)
        if kwargs:
            raise TypeError("unexpected keyword arguments %r" % sorted(kwargs))
        expected = len(info["params"]) - 1
        if run_mode == RUN_NONINTERACTIVE and len(args) != expected:
            raise TypeError("wrong number of parameters for %s: %d, expected %d"
                            % (self.proc_name, len(args), expected))
        try:
            return self._gimp.state.run(self.proc_name, [run_mode] + list(args))
        except Exception as exc:  # GIMP turns a failing plug-in into an execution error for the caller
            raise RuntimeError("Procedure '%s' has failed: %s" % (self.proc_name, exc))


def _np():
    import numpy
    return numpy


def _combine(image, shape, operation):
    np = _np()
    current = image.selection.pixels[..., 0].astype(np.float64)
    if operation == CHANNEL_OP_REPLACE:
        new = shape
    elif operation == CHANNEL_OP_ADD:
        new = np.maximum(current, shape)
    elif operation == CHANNEL_OP_SUBTRACT:
        new = np.minimum(current, 255 - shape)
    elif operation == CHANNEL_OP_INTERSECT:
        new = np.minimum(current, shape)
    else:
        raise RuntimeError("invalid channel operation %r" % operation)
    image.selection.pixels[..., 0] = np.clip(new, 0, 255).astype(np.uint8)
    image._record("selection")


_unused = (BASE_OF, INDEXED, INDEXED_IMAGE, INDEXEDA_IMAGE)


def _descendants(group):
    found = []
    for child in getattr(group, "layers", []):
        found.append(child)
        found.extend(_descendants(child))
    return found
