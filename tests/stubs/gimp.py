"""A working fake of GIMP 2.10's ``gimp`` module and its ``pdb``: numpy-backed images, layers and channels.

It behaves like GIMP where the plug-in could get it wrong: pixel regions use drawable coordinates and refuse
slices outside their bounds, writes need a dirty region (and ``merge_shadow`` for shadow regions), layers
must be inserted into the image they were made for and of its base type, masks only go on attached layers,
the selection is canvas-sized (selecting outside the canvas is clipped), pdb calls omit the run mode and raise
``RuntimeError`` on failure, undo groups must balance, context push/pop must balance.

Python 2.7 compatible (the registration test runs it under a real Python 2.7); numpy and Pillow are only
needed once pixels are touched.
"""

from __future__ import absolute_import, division

from gimpenums import (  # noqa
    ADD_ALPHA_MASK,
    ADD_BLACK_MASK,
    ADD_COPY_MASK,
    ADD_SELECTION_MASK,
    ADD_WHITE_MASK,
    BASE_OF,
    BPP,
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

try:
    import numpy as np
except ImportError:  # Python 2.7 registration test: no pixels needed
    np = None

error = RuntimeError


class _State(object):
    """Everything the fake GIMP remembers; tests read it (messages, progress, flushes) and reset it."""

    def __init__(self):
        self.images = []
        self.messages = []
        self.progress = []
        self.flushes = 0
        self.context_depth = 0
        self.procedures = {}  # name -> (run function, registration info)
        self.query = None
        self.run = None
        self.next_id = 1
        self.displays = []


state = _State()


def reset():
    """Forget every image, message and procedure (call between tests)."""
    global state
    state = _State()


def _new_id():
    state.next_id += 1
    return state.next_id


# ------------------------------------------------------------------------------------------ messages etc.

def message(text):
    state.messages.append(text)


def progress_init(text=""):
    state.progress.append(("init", text))


def progress_update(fraction):
    if not 0.0 <= fraction <= 1.0:
        raise RuntimeError("progress fraction %r outside 0..1" % fraction)
    state.progress.append(("update", fraction))


def displays_flush():
    state.flushes += 1


def image_list():
    return list(state.images)


def main(init, quit_, query, run):
    """Like gimp.main: GIMP calls query (registration), then run for each call through the pdb."""
    state.query, state.run = query, run
    query()


def install_procedure(name, blurb, help_, author, copyright_, date, label, imagetypes, plugin_type, params,
                      results):
    state.procedures[name] = dict(blurb=blurb, help=help_, author=author, copyright=copyright_, date=date,
                                  label=label, imagetypes=imagetypes, type=plugin_type, params=params,
                                  results=results, menus=[])


def menu_register(name, path):
    if name not in state.procedures:
        raise RuntimeError("menu_register: procedure %s is not installed" % name)
    state.procedures[name]["menus"].append(path)


class Parasite(object):
    def __init__(self, name, flags, data):
        self.name, self.flags, self.data = name, flags, data


# --------------------------------------------------------------------------------------------- drawables

class _Parasites(object):
    def attach_new_parasite(self, name, flags, data):
        self._parasites()[name] = Parasite(name, flags, data)

    def parasite_attach(self, parasite):
        self._parasites()[parasite.name] = parasite

    def parasite_find(self, name):
        return self._parasites().get(name)

    def parasite_list(self):
        return list(self._parasites().keys())

    def _parasites(self):
        if not hasattr(self, "_parasite_store"):
            self._parasite_store = {}
        return self._parasite_store


class PixelRgn(object):
    """``drawable.get_pixel_rgn(x, y, w, h, dirty, shadow)``: ``rgn[x1:x2, y1:y2]`` reads bytes, assignment
    writes them, all in drawable coordinates and only inside the region."""

    def __init__(self, drawable, x, y, w, h, dirty, shadow):
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > drawable.width or y + h > drawable.height:
            raise RuntimeError("pixel region %d,%d %dx%d is outside the drawable (%dx%d)"
                               % (x, y, w, h, drawable.width, drawable.height))
        self.drawable, self.x, self.y, self.w, self.h = drawable, x, y, w, h
        self.dirty, self.shadow, self.bpp = dirty, shadow, drawable.bpp

    def _box(self, key):
        if not isinstance(key, tuple) or len(key) != 2:
            raise TypeError("subscript must be [x1:x2, y1:y2]")
        xs, ys = key
        if isinstance(xs, int):
            xs = slice(xs, xs + 1)
        if isinstance(ys, int):
            ys = slice(ys, ys + 1)
        x1 = self.x if xs.start is None else xs.start
        x2 = self.x + self.w if xs.stop is None else xs.stop
        y1 = self.y if ys.start is None else ys.start
        y2 = self.y + self.h if ys.stop is None else ys.stop
        if x1 < self.x or y1 < self.y or x2 > self.x + self.w or y2 > self.y + self.h or x2 <= x1 or y2 <= y1:
            raise IndexError("subscript out of range")
        return x1, x2, y1, y2

    def __getitem__(self, key):
        x1, x2, y1, y2 = self._box(key)
        source = self.drawable._shadow if (self.shadow and self.drawable._shadow is not None) \
            else self.drawable.pixels
        return source[y1:y2, x1:x2, :].tobytes()

    def __setitem__(self, key, data):
        if not self.dirty:
            raise TypeError("pixel region is not dirty: it cannot be written")
        x1, x2, y1, y2 = self._box(key)
        expected = (x2 - x1) * (y2 - y1) * self.bpp
        if len(data) != expected:
            raise ValueError("string is wrong length (%d, expected %d)" % (len(data), expected))
        block = np.frombuffer(bytes(bytearray(data)), dtype=np.uint8).reshape(y2 - y1, x2 - x1, self.bpp)
        if self.shadow:
            if self.drawable._shadow is None:
                self.drawable._shadow = self.drawable.pixels.copy()
            self.drawable._shadow[y1:y2, x1:x2, :] = block
        else:
            self.drawable.pixels[y1:y2, x1:x2, :] = block
            self.drawable._touched("pixels")


class _Drawable(_Parasites):
    is_group = False

    def __init__(self, image, name, width, height, dtype):
        if width <= 0 or height <= 0:
            raise RuntimeError("drawable size %dx%d is invalid" % (width, height))
        self.image, self.name, self.width, self.height, self.type = image, name, width, height, dtype
        self.ID = _new_id()
        self.pixels = np.zeros((height, width, BPP[dtype]), np.uint8) if np is not None else None
        self._shadow = None
        self.offsets = (0, 0)
        self.visible = True
        self.opacity = 100.0

    @property
    def bpp(self):
        return BPP[self.type]

    @property
    def has_alpha(self):
        return self.type in (RGBA_IMAGE, GRAYA_IMAGE, INDEXEDA_IMAGE)

    @property
    def is_rgb(self):
        return self.type in (RGB_IMAGE, RGBA_IMAGE)

    @property
    def is_gray(self):
        return self.type in (GRAY_IMAGE, GRAYA_IMAGE)

    @property
    def is_indexed(self):
        return self.type in (INDEXED_IMAGE, INDEXEDA_IMAGE)

    def get_pixel_rgn(self, x, y, w, h, dirty=True, shadow=False):
        return PixelRgn(self, x, y, w, h, dirty, shadow)

    def flush(self):
        pass

    def merge_shadow(self, undo=True):
        if self._shadow is not None:
            self.pixels[...] = self._shadow
            self._shadow = None
            self._touched("merge shadow")

    def update(self, x, y, w, h):
        pass

    def _touched(self, what):
        if self.image is not None and self._attached():
            self.image._record(what)

    def _attached(self):
        return self.image is not None and self in self.image._all_items()


class Channel(_Drawable):
    """A gray channel: the selection, or a layer mask (``pixels`` (h, w, 1))."""

    def __init__(self, image, name, width, height, opacity=100.0, color=(0, 0, 0)):
        _Drawable.__init__(self, image, name, width, height, GRAY_IMAGE)
        self.layer = None

    def _attached(self):
        if self.layer is not None:
            return self.layer._attached()
        return self.image is not None and self is self.image.selection


class Layer(_Drawable):
    def __init__(self, image, name, width, height, type_=RGBA_IMAGE, opacity=100.0, mode=28):
        if image is None:
            raise RuntimeError("a layer needs an image")
        _Drawable.__init__(self, image, name, width, height, type_)
        self.opacity, self.mode, self.mask, self.parent = opacity, mode, None, None

    def set_offsets(self, x, y):
        self.offsets = (int(x), int(y))
        self._touched("offsets")

    def translate(self, dx, dy):
        self.set_offsets(self.offsets[0] + dx, self.offsets[1] + dy)

    def add_alpha(self):
        if self.has_alpha:
            return
        alpha = np.full(self.pixels.shape[:2] + (1,), 255, np.uint8)
        self.pixels = np.concatenate([self.pixels, alpha], axis=2)
        self.type += 1
        self._touched("add alpha")

    def create_mask(self, mask_type):
        mask = Channel(self.image, self.name + " mask", self.width, self.height)
        if mask_type == ADD_WHITE_MASK:
            mask.pixels[...] = 255
        elif mask_type == ADD_BLACK_MASK:
            pass
        elif mask_type == ADD_ALPHA_MASK:
            mask.pixels[..., 0] = self.pixels[..., -1] if self.has_alpha else 255
        elif mask_type == ADD_SELECTION_MASK:
            mask.pixels[..., 0] = _crop_canvas(self.image.selection.pixels[..., 0], self.offsets,
                                               self.width, self.height)
        elif mask_type == ADD_COPY_MASK:
            mask.pixels[..., 0] = _luma(self.pixels)
        else:
            raise RuntimeError("unsupported mask type %r" % mask_type)
        return mask

    def add_mask(self, mask):
        if not self._attached():
            raise RuntimeError("Item '%s' (%d) cannot be used because it has not been added to an image"
                               % (self.name, self.ID))
        if self.mask is not None:
            raise RuntimeError("Unable to add a layer mask since the layer already has one.")
        if (mask.width, mask.height) != (self.width, self.height):
            raise RuntimeError("Cannot add layer mask of different dimensions than specified layer.")
        mask.layer = self
        self.mask = mask
        self.image._record("add mask")

    def copy(self):
        other = Layer(self.image, self.name + " copy", self.width, self.height, self.type, self.opacity)
        other.pixels[...] = self.pixels
        other.offsets = self.offsets
        return other


class GroupLayer(Layer):
    is_group = True

    def __init__(self, image, name="Layer Group"):
        Layer.__init__(self, image, name, 1, 1, {RGB: RGBA_IMAGE, GRAY: GRAYA_IMAGE,
                                                 INDEXED: INDEXEDA_IMAGE}[image.base_type])
        self.layers = []

    def _bounds(self):
        if not self.layers:
            return self.offsets[0], self.offsets[1], 1, 1
        x1 = min(l.offsets[0] for l in self.layers)
        y1 = min(l.offsets[1] for l in self.layers)
        x2 = max(l.offsets[0] + l.width for l in self.layers)
        y2 = max(l.offsets[1] + l.height for l in self.layers)
        return x1, y1, x2 - x1, y2 - y1

    @property
    def children(self):
        return list(self.layers)

    def get_pixel_rgn(self, *args):
        raise RuntimeError("Item '%s' is a group item: its pixels cannot be modified" % self.name)


def _luma(pixels):
    if pixels.shape[2] >= 3:
        rgb = pixels[..., :3].astype(np.float64)
        return np.clip(np.round(rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722), 0,
                       255).astype(np.uint8)
    return pixels[..., 0].copy()


def _crop_canvas(canvas, offsets, width, height):
    """The part of a canvas-sized array under a drawable at ``offsets`` (zeros where it is off canvas)."""
    out = np.zeros((height, width), canvas.dtype)
    ox, oy = offsets
    x1, y1 = max(0, ox), max(0, oy)
    x2, y2 = min(canvas.shape[1], ox + width), min(canvas.shape[0], oy + height)
    if x2 > x1 and y2 > y1:
        out[y1 - oy:y2 - oy, x1 - ox:x2 - ox] = canvas[y1:y2, x1:x2]
    return out


# ------------------------------------------------------------------------------------------------- image

class Image(_Parasites):
    def __init__(self, width, height, base_type=RGB):
        if width <= 0 or height <= 0:
            raise RuntimeError("image size %dx%d is invalid" % (width, height))
        self.width, self.height, self.base_type = width, height, base_type
        self.ID = _new_id()
        self.layers = []
        self.active_layer = None
        self.filename = None
        self.name = "Untitled"
        self.colormap = None
        self.selection = Channel(self, "Selection Mask", width, height)
        self.undo_steps = []  # closed undo steps, each a list of what it did
        self.undo_depth = 0
        self.undo_frozen = 0
        self._open_group = None
        self.dirty = False
        state.images.append(self)

    @property
    def active_drawable(self):
        return self.active_layer

    def _record(self, what):
        self.dirty = True
        if self.undo_frozen:  # GIMP still dirties a frozen image; it records no undo step
            return
        if self.undo_depth > 0:
            self._open_group.append(what)
        else:
            self.undo_steps.append([what])

    def _all_items(self):
        items = []

        def walk(layers):
            for layer in layers:
                items.append(layer)
                if layer.mask is not None:
                    items.append(layer.mask)
                if layer.is_group:
                    walk(layer.layers)
        walk(self.layers)
        items.append(self.selection)
        return items

    def _siblings(self, parent):
        return self.layers if parent is None else parent.layers

    def insert_layer(self, layer, parent=None, position=-1):
        if not isinstance(layer, Layer):
            raise RuntimeError("insert_layer needs a layer")
        if layer.image is not self:
            raise RuntimeError("Item '%s' (%d) has already been added to an image or was made for another "
                               "image" % (layer.name, layer.ID))
        if layer in self._all_items():
            raise RuntimeError("Item '%s' (%d) has already been added to an image" % (layer.name, layer.ID))
        if BASE_OF[layer.type] != self.base_type:
            raise RuntimeError("Layer '%s' (%d) has the wrong type for image %d (its base type does not "
                               "match)" % (layer.name, layer.ID, self.ID))
        if parent is not None and (not parent.is_group or parent not in self._all_items()):
            raise RuntimeError("parent is not a layer group of this image")
        if position == -1 and parent is None and self.active_layer is not None:
            parent = self.active_layer.parent
            position = self._siblings(parent).index(self.active_layer)
        siblings = self._siblings(parent)
        position = len(siblings) if position > len(siblings) else max(0, position)
        siblings.insert(position, layer)
        layer.parent = parent
        self.active_layer = layer
        self._record("insert layer %s" % layer.name)

    def add_layer(self, layer, position=-1):
        self.insert_layer(layer, None, position)

    def remove_layer(self, layer):
        self._siblings(layer.parent).remove(layer)
        if self.active_layer is layer:
            self.active_layer = self.layers[0] if self.layers else None
        self._record("remove layer")

    def composite(self):
        """The visible projection as (H, W, 4) uint8 (normal mode, opacity, masks, groups)."""
        canvas = np.zeros((self.height, self.width, 4), np.float64)
        _composite_into(canvas, self.layers, self)
        return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def _as_rgba(layer, image):
    px = layer.pixels.astype(np.float64)
    if layer.is_indexed:
        cmap = np.frombuffer(bytes(bytearray(image.colormap or b"")), np.uint8).reshape(-1, 3)
        rgb = cmap[layer.pixels[..., 0]].astype(np.float64)
        alpha = px[..., 1:2] if layer.has_alpha else np.full(px.shape[:2] + (1,), 255.0)
        return np.concatenate([rgb, alpha], axis=2)
    if layer.is_gray:
        rgb = np.repeat(px[..., :1], 3, axis=2)
    else:
        rgb = px[..., :3]
    alpha = px[..., -1:] if layer.has_alpha else np.full(px.shape[:2] + (1,), 255.0)
    return np.concatenate([rgb, alpha], axis=2)


def _composite_into(canvas, layers, image):
    for layer in reversed(layers):  # index 0 is the top
        if not layer.visible:
            continue
        if layer.is_group:
            sub = np.zeros_like(canvas)
            _composite_into(sub, layer.layers, image)
            src, (ox, oy), h, w = sub, (0, 0), canvas.shape[0], canvas.shape[1]
        else:
            src, (ox, oy), h, w = _as_rgba(layer, image), layer.offsets, layer.height, layer.width
            if layer.mask is not None:
                src = src.copy()
                src[..., 3] *= layer.mask.pixels[..., 0] / 255.0
        x1, y1 = max(0, ox), max(0, oy)
        x2, y2 = min(canvas.shape[1], ox + w), min(canvas.shape[0], oy + h)
        if x2 <= x1 or y2 <= y1:
            continue
        s = src[y1 - oy:y2 - oy, x1 - ox:x2 - ox]
        d = canvas[y1:y2, x1:x2]
        a = s[..., 3:4] / 255.0 * (layer.opacity / 100.0)
        da = d[..., 3:4] / 255.0
        out_a = a + da * (1 - a)
        safe = np.where(out_a > 0, out_a, 1)
        rgb = np.where(a >= 1.0, s[..., :3], (s[..., :3] * a + d[..., :3] * da * (1 - a)) / safe)
        rgb = np.where(a <= 0.0, d[..., :3], rgb)
        d[..., :3] = rgb
        d[..., 3:4] = out_a * 255.0


class Display(object):
    def __init__(self, image):
        self.image = image
        state.displays.append(self)


def delete_image(image):
    if image in state.images:
        state.images.remove(image)


# PDB is in a module of its own, imported late so that it can use everything above.
from _pdb import PDB  # noqa: E402

pdb = PDB(__import__(__name__))
