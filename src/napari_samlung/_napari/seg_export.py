"""The widget's lung volumes and its "Export as DICOM SEG" action.

- :func:`volume_text`: the readout's volume line (left, right and total in mL,
  areas in cm2 for a 2D image), with the relative volume error when a ground
  truth is set; Qt-free.
- :class:`SegExport`: the "Export as DICOM SEG" button, enabled for images read
  from a DICOM series; it writes the output labels as a DICOM SEG that
  references that series (:func:`~napari_samlung.io.dicom_seg.write_dicom_seg`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.volumes import lung_volumes
from ..io.dicom_seg import is_dicom_image, write_dicom_seg
from ..io.outputs import protecting
from .export import choose_output, open_files, write_output
from .layers import like_from_metadata
from .session import LungSession


def volume_text(session: LungSession, labels, with_truth: bool = True) -> str:
    """``"\\nvolume mL: left ...  right ...  total ..."`` for the labels, or ``""`` when empty.

    With ``with_truth`` and a ground truth loaded in the session (it is, once a
    run used it), the relative volume error is added.
    """
    if labels is None:
        return ""
    labels = np.asarray(labels)
    if labels.size == 0 or not labels.any() or labels.size != session.volume.size:
        return ""
    truth = session.truth if with_truth else None
    if truth is not None:
        truth = np.asarray(truth).reshape(labels.shape)
    spacing = session.spacing_zyx_mm[-labels.ndim :]
    try:
        return "\n" + lung_volumes(labels, spacing, truth=truth).summary_line()
    except ValueError:  # a spacing napari gave that cannot be a voxel size
        return ""


class SegExport:
    """The "Export as DICOM SEG" button of the dock widget, and its volume readout."""

    def __init__(self, widget) -> None:
        from magicgui.widgets import PushButton

        self.widget = widget
        self.button = PushButton(text="Export as DICOM SEG")
        self.button.tooltip = (
            "write the output labels as a DICOM Segmentation of the image's DICOM series "
            "(left and right lung, only the slices with lung)"
        )
        layout = widget.native.layout()
        layout.insertWidget(layout.indexOf(widget.export_button.native) + 1, self.button.native)
        self.button.changed.connect(lambda: self.export())
        widget.image.changed.connect(self.refresh)
        self.refresh()

    def _like(self):
        layer = self.widget.image.value
        if layer is None:
            return None
        return like_from_metadata(np.shape(layer.data), layer.metadata, scale=layer.scale)

    def _labels(self):
        writer = self.widget.image_layers.writer
        return None if writer is None else writer.layer.data

    def refresh(self, value=None) -> None:
        """Enable the button for an image read from a DICOM series."""
        self.button.enabled = is_dicom_image(self._like())

    def lines(self) -> str:
        """The readout's volume line of the output labels (``""`` when there are none)."""
        has_truth = self.widget.ground_truth.value is not None
        return volume_text(self.widget.session, self._labels(), with_truth=has_truth)

    def export(self, path: str | Path | None = None) -> Path | None:
        """Write the output labels as a DICOM SEG; asks for a file and before replacing one.

        Never over a file open in napari (the DICOM slices included): see
        :func:`~napari_samlung._napari.export.choose_output`.
        Returns the file written, or None (nothing to write, refused, or the user said no).
        """
        from napari.utils.notifications import show_warning

        like, labels = self._like(), self._labels()
        if not is_dicom_image(like):
            show_warning("DICOM SEG export needs an image read from a DICOM series")
            return None
        if labels is None or not np.asarray(labels).any():
            show_warning("no lung labels yet: segment first, then export")
            return None
        sources = [like.source_path, *like.meta.get("dicom_files", ())]
        inputs = [*(p for p in sources if p), *open_files([self.widget.viewer]), *open_files()]
        target = choose_output(
            self.widget.native,
            title="Export as DICOM SEG",
            default_name=f"{self.widget.image.value.name}_lungs.dcm",
            file_filter="DICOM (*.dcm)",
            suffix=".dcm",
            path=path,
            inputs=inputs,
        )
        if target is None:
            return None
        labels = np.asarray(labels)
        slices = int(np.count_nonzero(labels.reshape(len(labels), -1).any(axis=1)))

        def write(p: Path) -> None:
            with protecting(inputs):  # write_dicom_seg goes through the one atomic writer
                write_dicom_seg(p, labels, like, overwrite=True)

        done = f"wrote the lungs of {slices} slices as DICOM SEG to {target}"
        return write_output(target, write, done)
