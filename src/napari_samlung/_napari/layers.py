"""The layers of one image: placement, lookup and creation, and the binding the widget uses.

- :func:`placement` turns an :class:`~napari_samlung.io.ImageData` into napari
  layer keyword arguments (``scale``, ``translate``, ``metadata``), so an image
  and a mask read from files on the same grid land on the same place.
- :func:`like_from_metadata` rebuilds, from a layer's metadata, the
  :class:`~napari_samlung.io.ImageData` the writer needs to put a mask back on
  its source grid.
- :func:`volume_from_image_layer` checks an Image layer and returns its voxels
  as a ``(slice, row, col)`` array (a 2D image becomes a one-slice volume).
- :func:`prompt_layers_for`, :func:`output_layer_for` and
  :func:`marked_truth_layer` find (or make) the layers that go with an image.
- :class:`ImageLayers` holds the layers the widget works on (image, prompts,
  ground truth, output writer) and the slice on screen; the interactive path
  and the long runs share it.

Layers are only touched on the main thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.windowing import Window, is_prewindowed, rgb_to_grey
from ..errors import SamlungError, ShapeMismatchError
from ..io import ImageData
from .labels_history import LabelsWatch
from .output import OutputWriter, ProvenanceBook
from .prompt_layers import make_points_layer, make_shapes_layer

#: Key of our entry in a layer's ``metadata``.
META_KEY = "samlung"
#: Key, in our metadata entry, of the display window the reader set: (level, width) in HU.
READER_WINDOW_KEY = "display_window_hu"
#: Maps RAS world axes to the (superior, posterior, left) axes of our arrays.
_RAS_TO_SPL = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])


def placement(image: ImageData, role: str = "image") -> dict:
    """napari layer kwargs placing ``image``'s array in world millimetres.

    ``scale`` is the voxel spacing.  ``translate`` is the world position of
    voxel 0 in the (superior, posterior, left) frame of our arrays when the
    source has an affine, so files on the same grid overlay; otherwise 0.
    ``metadata`` keeps the affine and the source header for the writer.
    """
    ndim = image.data.ndim
    scale = tuple(float(s) for s in image.spacing_zyx_mm[-ndim:])
    translate = (0.0,) * ndim
    if image.affine is not None and ndim == 3:
        origin = _RAS_TO_SPL @ np.asarray(image.affine, float)[:3, 3]
        translate = tuple(float(v) for v in origin)
    meta = {
        "role": role,
        "spacing_zyx_mm": scale,
        "affine": None if image.affine is None else np.asarray(image.affine, float),
        "modality": image.modality,
        "source_path": None if image.source_path is None else str(image.source_path),
        "shape": tuple(int(n) for n in image.data.shape),
        "meta": dict(image.meta),
    }
    return {"scale": scale, "translate": translate, "metadata": {META_KEY: meta}}


def samlung_meta(metadata: dict | None) -> dict | None:
    """Our entry of a layer's metadata, or None."""
    if not metadata:
        return None
    entry = metadata.get(META_KEY)
    return entry if isinstance(entry, dict) else None


def like_from_metadata(shape: tuple[int, ...], metadata: dict | None, scale=None) -> ImageData:
    """An :class:`ImageData` stand-in (no voxels) describing where labels of ``shape`` belong.

    Uses the geometry our reader stored in the layer metadata when its shape
    matches; otherwise the layer's ``scale`` as the spacing and no affine.
    """
    shape = tuple(int(n) for n in shape)
    entry = samlung_meta(metadata)
    stand_in = np.broadcast_to(np.zeros((), np.uint8), shape)
    if entry is not None and tuple(entry.get("shape", ())) == shape:
        source = entry.get("source_path")
        return ImageData(
            stand_in,
            tuple(entry["spacing_zyx_mm"]),
            entry.get("affine"),
            Path(source) if source else None,
            entry.get("modality", "ct"),
            dict(entry.get("meta") or {}),
        )
    spacing = tuple(float(s) for s in scale) if scale is not None else (1.0,) * len(shape)
    return ImageData(stand_in, spacing[-len(shape) :], None, None, "ct", {})


def ct_display_window(data: np.ndarray) -> Window | None:
    """The lung window, for CT in Hounsfield units; None for anything else (napari's limits)."""
    if is_prewindowed(data) or data.size == 0:
        return None
    if float(np.min(data)) > -500:  # not Hounsfield units (no air)
        return None
    return Window.preset("lung")


def has_reader_window(layer) -> bool:
    """Whether our reader opened ``layer`` in a display window (:data:`READER_WINDOW_KEY`)."""
    entry = samlung_meta(getattr(layer, "metadata", None)) or {}
    return entry.get(READER_WINDOW_KEY) is not None and not getattr(layer, "rgb", False)


def volume_from_image_layer(layer) -> tuple[np.ndarray, bool]:
    """``(volume, is_2d)`` for an Image layer: ``(slice, row, col)`` voxels.

    RGB(A) layers are converted to grey (uint8; float RGB in 0..1 is scaled to 0..255).  Raises
    :class:`~napari_samlung.errors.SamlungError` with what to do for
    multiscale, 4D+ or 1D data.
    """
    name = getattr(layer, "name", "the image")
    if getattr(layer, "multiscale", False):
        raise SamlungError(
            f"layer {name!r} is multiscale; open the full-resolution image as a plain layer"
        )
    data = layer.data
    if getattr(layer, "rgb", False):
        rgb = np.asarray(data)[..., :3]
        if np.issubdtype(rgb.dtype, np.floating) and rgb.size and rgb.max() <= 1.0:
            rgb = rgb * 255.0  # napari's float RGB convention: 0..1
        data = rgb_to_grey(rgb)
    else:
        data = np.asarray(data)
    if data.ndim == 2:
        return data[None], True
    if data.ndim == 3:
        return data, False
    raise ShapeMismatchError(
        f"layer {name!r} has {data.ndim} dimensions {tuple(data.shape)}; napari-samlung "
        "segments a 2D image or a 3D (slice, row, col) volume: split channels or time "
        "points into separate layers first"
    )


def image_modality_and_spacing(layer, volume: np.ndarray, is_2d: bool) -> tuple[str, tuple]:
    """``(modality, spacing_zyx_mm)`` of an Image layer: what our reader recorded, else a
    guess (a 2D image without Hounsfield units is an X-ray) and the layer's ``scale``."""
    entry = samlung_meta(getattr(layer, "metadata", None)) or {}
    modality = entry.get("modality")
    if modality not in ("ct", "xray"):
        modality = "xray" if is_2d and is_prewindowed(volume) else "ct"
    spacing = entry.get("spacing_zyx_mm") or tuple(getattr(layer, "scale", ()))
    return modality, tuple(float(v) for v in spacing)


# --------------------------------------------------------------------------- lookup


def layer_placement(layer) -> dict:
    """``scale`` and ``translate`` of ``layer``, for a layer that must overlay it."""
    return {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}


def find_layer(viewer, name: str, kind, ndim: int | None = None):
    """The first layer of type ``kind`` called ``name`` (with ``ndim`` dimensions), or None."""
    for layer in viewer.layers:
        if isinstance(layer, kind) and layer.name == name and ndim in (None, layer.ndim):
            return layer
    return None


def prompt_layers_for(viewer, image, ndim: int) -> tuple:
    """``(points, shapes)``: the prompt layers of ``image``, made and added when missing."""
    from napari.layers import Points, Shapes

    placed = layer_placement(image)
    points = find_layer(viewer, f"{image.name} prompts", Points, ndim)
    if points is None:
        points = make_points_layer(f"{image.name} prompts", ndim, **placed)
    shapes = find_layer(viewer, f"{image.name} boxes", Shapes, ndim)
    if shapes is None:
        shapes = make_shapes_layer(f"{image.name} boxes", ndim, **placed)
    for layer in (shapes, points):
        if layer not in viewer.layers:
            viewer.layers.append(layer)
    shapes.mode = "add_rectangle"
    return points, shapes


def output_layer_for(viewer, image, shape: tuple[int, ...]):
    """The Labels layer ``'<image> lungs'`` of ``shape``, added (empty) when missing."""
    from napari.layers import Labels

    name = f"{image.name} lungs"
    for layer in viewer.layers:
        if isinstance(layer, Labels) and layer.name == name and layer.data.shape == shape:
            return layer
    metadata = {}
    entry = samlung_meta(image.metadata)
    if entry is not None:
        metadata = {META_KEY: {**entry, "role": "output"}}
    return viewer.add_labels(
        np.zeros(shape, np.uint8), name=name, metadata=metadata, **layer_placement(image)
    )


def marked_truth_layer(viewer, shape: tuple[int, ...], exclude=None):
    """A Labels layer of ``shape`` our reader marked as ground truth (not ``exclude``), or None."""
    from napari.layers import Labels

    for layer in viewer.layers:
        entry = samlung_meta(layer.metadata) or {}
        if (
            isinstance(layer, Labels)
            and entry.get("role") == "ground_truth"
            and layer.data.shape == shape
            and layer is not exclude
        ):
            return layer
    return None


def truth_problem(truth, shape: tuple[int, ...]) -> str | None:
    """Why the Labels layer ``truth`` cannot be the ground truth of an image of ``shape``."""
    if truth is None:
        return None
    if truth.data.shape != shape:
        return (
            f"ground truth {truth.name!r} has shape {truth.data.shape} but the image has "
            f"shape {shape}; choose the labels of this image"
        )
    return None


def output_problem(output, truth, shape: tuple[int, ...]) -> str | None:
    """Why the Labels layer ``output`` cannot take the labels of an image of ``shape``."""
    if output is None:
        return None
    if output is truth:
        return "the output cannot be the ground truth; choose another Labels layer"
    if output.data.shape != shape:
        return (
            f"output {output.name!r} has shape {output.data.shape} but the image has shape "
            f"{shape}; choose a layer of the image's shape"
        )
    return None


def _ignore(*args) -> None:
    pass


# --------------------------------------------------------------------------- binding


class ImageLayers:
    """The layers the widget works on, for one image at a time.

    Parameters
    ----------
    viewer
        The napari viewer.
    session
        The :class:`~napari_samlung._napari.session.LungSession` holding the image's voxels.
    on_output_made
        Called with the output Labels layer when :meth:`output` had to make one.
    on_scores
        Called when a change of the output's labels (painting, erasing, undo, redo,
        the data setter) changed the scores.
    """

    def __init__(
        self,
        viewer,
        session,
        on_output_made: Callable[[object], None] = _ignore,
        on_scores: Callable[[], None] = _ignore,
    ) -> None:
        self.viewer = viewer
        self.session = session
        self.on_output_made = on_output_made
        self.on_scores = on_scores
        self.image_layer = None
        self.points_layer = None
        self.shapes_layer = None
        self.truth_layer = None
        self._truth_style: tuple | None = None  # the ground-truth layer's own look
        self.writer: OutputWriter | None = None
        #: Notices every change of the output's labels (undo and redo emit no paint event).
        self.watch: LabelsWatch | None = None
        #: Changes whenever the image or the output changes: results of older work are stale.
        self.generation = 0
        #: Called (no arguments) after the output changed.
        self.output_listeners: list[Callable[[], None]] = []
        self._provenance = ProvenanceBook()  # who wrote what, per output layer
        self._truth_dirty = True

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the image layer's data (and of its output and ground truth)."""
        volume = self.session.volume
        return tuple(volume.shape[1:]) if self.session.is_2d else tuple(volume.shape)

    def current_slice(self) -> int | None:
        """The image slice on screen, or None (no image, 3D view, or a rolled axis)."""
        layer = self.image_layer
        if layer is None:
            return None
        if self.session.is_2d:
            return 0
        dims = self.viewer.dims
        if dims.ndisplay != 2 or (dims.ndim - 3) in dims.displayed:
            return None
        position = layer.world_to_data(dims.point)
        return self.session.clamp(int(round(float(position[0]))))

    def set_image(self, image, points, shapes) -> None:
        """Use this image layer and its prompt layers (None: no image); no output yet."""
        self.image_layer, self.points_layer, self.shapes_layer = image, points, shapes
        self.set_output(None)

    def restore_prompt_layers(self) -> None:
        """Put back prompt layers the user deleted, so generated prompts are visible."""
        for layer in (self.shapes_layer, self.points_layer):
            if layer is not None and layer not in self.viewer.layers:
                self.viewer.layers.append(layer)

    # ------------------------------------------------------------------ output

    def set_output(self, layer) -> None:
        """Write into this Labels layer (None: one is made by :meth:`output` when needed).

        Scores start over, and the :attr:`output_listeners` are told (a run in
        progress belongs to the old output).
        """
        if self.writer is not None:
            self.writer.disconnect()
            self.writer = None
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if layer is not None:
            self.writer = OutputWriter(
                layer, on_user_edit=self._on_user_edit, provenance=self._provenance.of(layer)
            )
            self.watch = LabelsWatch(layer, self.rescore)
            self.writer.after_write.append(self.watch.remember)
        self.generation += 1
        self.session.reset_scores()
        for listener in list(self.output_listeners):
            listener()

    def output(self) -> OutputWriter | None:
        """The output writer; the layer ``'<image> lungs'`` is found or made when there is none."""
        if self.writer is None and self.image_layer is not None:
            layer = output_layer_for(self.viewer, self.image_layer, self.shape)
            self.set_output(layer)
            self.on_output_made(layer)
            self.truth_above_output()
        return self.writer

    def truth_above_output(self) -> None:
        """Put the ground truth's contour just above the output labels, so both show."""
        truth, writer = self.truth_layer, self.writer
        if truth is None or writer is None:
            return
        layers = self.viewer.layers
        if truth not in layers or writer.layer not in layers:
            return
        here, output = layers.index(truth), layers.index(writer.layer)
        if here < output:
            layers.move(here, output + 1)  # napari inserts before the destination index

    def _on_user_edit(self, slices: set[int]) -> None:
        """The user painted: rescore those slices now (the watch need not)."""
        if self.watch is not None:
            for z in slices:
                self.watch.remember(z)
        self.rescore(slices)

    def rescore(self, slices: set[int]) -> None:
        """Labels changed on ``slices``: score them again (ground truth, the CT's air)."""
        if self.writer is None:
            return
        requality = [z for z in sorted(slices) if z in self.session.quality.slices]
        for z in requality:
            self.session.record_quality(z, np.asarray(self.writer.slice_view(z)))
        rescored = []
        if self.truth_layer is not None and self.ensure_truth():
            rescored = [z for z in sorted(slices) if z in self.session.scores]
        for z in rescored:
            self.session.score(z, np.asarray(self.writer.slice_view(z)))
        if rescored or requality:
            self.on_scores()

    # ------------------------------------------------------------------ ground truth

    def set_truth_layer(self, layer) -> None:
        """Score against this Labels layer (None: no scores); it is read when next needed."""
        if self.truth_layer is not None:
            self.truth_layer.events.data.disconnect(self._on_truth_edit)
            self.truth_layer.events.paint.disconnect(self._on_truth_edit)
            if layer is not self.truth_layer:
                restore_truth_style(self.truth_layer, self._truth_style)
        if layer is not None and layer is not self.truth_layer:
            self._truth_style = show_as_truth(layer)
        self.truth_layer = layer
        self.truth_above_output()
        self.session.truth = None
        self._truth_dirty = True
        if layer is not None:
            layer.events.data.connect(self._on_truth_edit)
            layer.events.paint.connect(self._on_truth_edit)

    def _on_truth_edit(self, event=None) -> None:
        self._truth_dirty = True

    def ensure_truth(self) -> bool:
        """Load the ground truth into the session; False (with a notification) if unusable."""
        from napari.utils.notifications import show_error

        if self.truth_layer is None:
            self.session.truth = None
            return False
        if self._truth_dirty or self.session.truth is None:
            try:
                self.session.set_truth(np.asarray(self.truth_layer.data))
            except SamlungError as exc:
                show_error(str(exc))
                return False
            self._truth_dirty = False
        return True

    def close(self) -> None:
        """Let go of every layer (the widget is going away)."""
        self.output_listeners.clear()
        self.set_image(None, None, None)
        self.set_truth_layer(None)


#: The ground truth is drawn as a contour of this colour and width (px), so that the
#: output labels under it stay visible.
TRUTH_COLOR, TRUTH_CONTOUR_PX = "yellow", 2


def show_as_truth(layer) -> tuple:
    """Draw ``layer`` as the ground truth (a yellow contour); returns its old style."""
    from napari.utils.colormaps import DirectLabelColormap

    style = (layer.colormap, layer.contour, layer.opacity)
    layer.colormap = DirectLabelColormap(color_dict={None: TRUTH_COLOR, 0: "transparent"})
    layer.contour = TRUTH_CONTOUR_PX
    layer.opacity = 1.0
    return style


def restore_truth_style(layer, style: tuple | None) -> None:
    """Give a layer that is no longer the ground truth its own style back."""
    if style is None:
        return
    colormap, contour, opacity = style
    layer.colormap, layer.contour, layer.opacity = colormap, contour, opacity
