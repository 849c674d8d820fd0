"""pydicom and highdicom are optional: without them everything but DICOM works, and a
DICOM folder is refused in one line naming the pip command."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import DATA_DIR, requires_data


@requires_data("nifti_examples")
def test_nifti_and_xray_paths_without_pydicom(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "slice.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["pydicom"] = None  # as if not installed
        sys.modules["highdicom"] = None
        import numpy as np
        from PIL import Image
        from napari_samlung import cli
        from napari_samlung._napari import reader, writer
        from napari_samlung.errors import InputFileError
        from napari_samlung.io import read_image, write_labels
        from napari_samlung.pipeline import export

        image = read_image({str(DATA_DIR / "nifti_examples" / "example_ct_sm.nii.gz")!r})
        labels = np.zeros(image.data.shape, np.uint8)
        write_labels({str(tmp_path / "l.nii.gz")!r}, labels, like=image)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save({str(tmp_path / "x.png")!r})
        assert read_image({str(tmp_path / "x.png")!r}).modality == "xray"
        try:
            read_image({str(folder)!r})
        except InputFileError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "reading DICOM needs pydicom, which is not installed; pip install 'napari-samlung[dicom]'"
    )
