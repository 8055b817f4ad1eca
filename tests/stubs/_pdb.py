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

    def gimp_layer_new_from_visible(self, image, dest_image, name):
        """What GIMP 2.10 makes from the projection: canvas-sized, at (0, 0), always with alpha (the
        projection's transparency is kept), in ``dest_image``'s base type, named ``name``; not inserted."""
        np = _np()
        rgba = image.composite()
        base = dest_image.base_type
        if base == GRAY:
            rgb = rgba[..., :3].astype(np.float64)
            gray = np.clip(np.round(rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722), 0, 255)
            pixels, type_ = np.stack([gray.astype(np.uint8), rgba[..., 3]], axis=2), GRAYA_IMAGE
        elif base == RGB:
            pixels, type_ = rgba, RGBA_IMAGE
        else:
            raise RuntimeError("gimp-layer-new-from-visible: an indexed destination is not supported here")
        layer = self._gimp.Layer(dest_image, name, image.width, image.height, type_)
        layer.pixels[...] = pixels
        return layer

    def gimp_layer_new_from_drawable(self, drawable, dest_image):
        """A copy of the drawable for ``dest_image`` (not inserted), as GIMP 2.10's duplicate and convert: the
        name gets " copy", the offsets, opacity, visibility and mask are kept, and the pixels are converted to
        the destination's base type when it differs (alpha kept or not as it was)."""
        np = _np()
        if isinstance(drawable, self._gimp.GroupLayer):
            raise RuntimeError("gimp-layer-new-from-drawable: copying a group is not supported here")
        source_image = drawable.image
        rgba = self._gimp._as_rgba(drawable, source_image)
        base = dest_image.base_type
        alpha = drawable.has_alpha
        if base == BASE_OF[drawable.type] and not drawable.is_indexed:
            pixels, type_ = drawable.pixels.copy(), drawable.type
        elif base == RGB:
            pixels = rgba if alpha else rgba[..., :3]
            type_ = RGBA_IMAGE if alpha else RGB_IMAGE
        elif base == GRAY:
            rgb = rgba[..., :3]
            gray = np.round(rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722)[..., None]
            pixels = np.concatenate([gray, rgba[..., 3:]], axis=2) if alpha else gray
            type_ = GRAYA_IMAGE if alpha else GRAY_IMAGE
        else:
            raise RuntimeError("gimp-layer-new-from-drawable: an indexed destination is not supported here")
        name = drawable.name if drawable.name.endswith("copy") else drawable.name + " copy"
        layer = self._gimp.Layer(dest_image, name, drawable.width, drawable.height, type_,
                                 getattr(drawable, "opacity", 100.0))
        layer.pixels[...] = np.clip(pixels, 0, 255).astype(np.uint8).reshape(layer.pixels.shape)
        layer.offsets = tuple(drawable.offsets)
        layer.visible = drawable.visible
        mask = getattr(drawable, "mask", None)
        if mask is not None:
            copy = self._gimp.Channel(dest_image, mask.name, mask.width, mask.height)
            copy.pixels[...] = mask.pixels
            copy.layer, layer.mask = layer, copy
        return layer

    def gimp_layer_scale(self, layer, new_width, new_height, local_origin):
        """Scale the layer (and its mask) to the size with the context's interpolation, GIMP 2.10's default
        cubic, on premultiplied alpha as GEGL does (no colour bleeds in from transparent pixels). Only for a
        layer in an image; the offsets scale about the image origin, or about the layer's centre with
        ``local_origin``."""
        np = _np()
        from PIL import Image as PILImage
        if not layer._attached():
            raise RuntimeError("Item '%s' (%d) cannot be used because it has not been added to an image"
                               % (layer.name, layer.ID))
        if layer.is_group:
            raise RuntimeError("gimp-layer-scale: scaling a group is not supported here")
        new_width, new_height = int(new_width), int(new_height)
        if new_width <= 0 or new_height <= 0:
            raise RuntimeError("Procedure 'gimp-layer-scale' has been called with value '%d' for argument "
                               "'new-width' (#2), which is out of range." % min(new_width, new_height))
        ox, oy = layer.offsets
        if local_origin:
            nx = ox + (layer.width - new_width) // 2
            ny = oy + (layer.height - new_height) // 2
        else:
            nx = int(float(ox) * new_width / layer.width)
            ny = int(float(oy) * new_height / layer.height)

        def scaled(pixels, has_alpha):
            data = pixels.astype(np.float32)
            channels = data.shape[2]
            if has_alpha:
                data[..., :-1] *= data[..., -1:] / 255.0
            planes = [np.asarray(PILImage.fromarray(np.ascontiguousarray(data[..., c]), "F")
                                 .resize((new_width, new_height), PILImage.BICUBIC))
                      for c in range(channels)]
            out = np.stack(planes, axis=2)
            if has_alpha:
                alpha = np.clip(out[..., -1:], 0, 255)
                safe = np.where(alpha > 0, alpha, 1.0)
                out[..., :-1] = np.where(alpha > 0, out[..., :-1] * 255.0 / safe, 0)
                out[..., -1:] = alpha
            return np.clip(np.round(out), 0, 255).astype(np.uint8)

        if layer.is_indexed:
            raise RuntimeError("gimp-layer-scale: indexed layers are not supported here")
        layer.pixels = scaled(layer.pixels, layer.has_alpha)
        layer.width, layer.height = new_width, new_height
        if layer.mask is not None:
            layer.mask.pixels = scaled(layer.mask.pixels, False)
            layer.mask.width, layer.mask.height = new_width, new_height
        layer.offsets = (nx, ny)
        layer.image._record("scale %s" % layer.name)

    def gimp_image_resize(self, image, new_width, new_height, offx, offy):
        """Resize the canvas as GIMP 2.10 does: every layer keeps its size and pixels and moves by (offx, offy)
        (new - old); the selection (a channel) is resized with the offsets, unselected in the new area; ONE
        undo step."""
        np = _np()
        new_width, new_height, offx, offy = int(new_width), int(new_height), int(offx), int(offy)
        if not (0 < new_width <= 524288 and 0 < new_height <= 524288):
            raise RuntimeError("Procedure 'gimp-image-resize' has been called with an image size %dx%d out of "
                               "range." % (new_width, new_height))
        for layer in image.layers:  # top-level items move; a group's children move with it
            _translate_tree(layer, offx, offy)
        old = image.selection.pixels
        sel = np.zeros((new_height, new_width, 1), np.uint8)
        x1, y1 = max(0, offx), max(0, offy)
        x2, y2 = min(new_width, offx + image.width), min(new_height, offy + image.height)
        if x2 > x1 and y2 > y1:
            sel[y1:y2, x1:x2] = old[y1 - offy:y2 - offy, x1 - offx:x2 - offx]
        image.selection.pixels = sel
        image.selection.width, image.selection.height = new_width, new_height
        image.width, image.height = new_width, new_height
        image._record("resize image")

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


def _translate_tree(item, dx, dy):
    item.offsets = (item.offsets[0] + dx, item.offsets[1] + dy)
    for child in getattr(item, "layers", []):
        _translate_tree(child, dx, dy)


def _descendants(group):
    found = []
    for child in getattr(group, "layers", []):
        found.append(child)
        found.extend(_descendants(child))
    return found
