"""Work around a crash between Mesa's software OpenGL and triton.

On Linux without a GPU OpenGL driver (VMs, remote desktops, Xvfb) napari's
canvas loads Mesa's llvmpipe, which maps ``libLLVM``.  Importing ``triton``
afterwards (torchvision and torch import it when it is installed, as with
every CUDA build of torch) loads triton's own LLVM into the same process and
segfaults.  napari-samlung never needs triton (it is only used by
``torch.compile`` on GPUs), so when Mesa's LLVM is already loaded and triton
is not, triton is marked unavailable before any model is imported.
"""

from __future__ import annotations

import sys


def avoid_triton_llvm_clash() -> bool:
    """Mark triton unimportable when loading it would crash; True when it did so."""
    if sys.platform != "linux" or "triton" in sys.modules:
        return False
    if "torch._dynamo" in sys.modules:  # torch already decided about triton
        return False
    try:
        with open("/proc/self/maps") as fh:
            mesa_llvm = "libLLVM" in fh.read()
    except OSError:
        return False
    if mesa_llvm:
        sys.modules["triton"] = None  # type: ignore[assignment]
    return mesa_llvm
