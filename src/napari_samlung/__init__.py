"""napari-samlung: lung segmentation in chest CT and X-ray with Segment Anything models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
