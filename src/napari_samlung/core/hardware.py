"""What the machine offers: devices, bf16 support, oneDNN fusions and CUDA
memory for batch sizing.

Everything here answers a question about the hardware; nothing runs a model.
"""

from __future__ import annotations

import torch

from ..errors import ModelError


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for a device name.

    Parameters
    ----------
    device : str
        ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ModelError
        For an unknown name or a device that is not available here.
    """
    device = (device or "auto").lower()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but no CUDA GPU is available; use --device cpu")
    if device == "mps" and not has_mps:
        raise ModelError("MPS was requested but is not available here; use --device cpu")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return torch.device(device)


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(precision: str, device: torch.device) -> str:
    """The precision the encoder runs at on ``device``.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16"}
        ``"auto"`` picks bf16 where the device computes it natively (a CUDA GPU
        with bf16, a CPU with AVX512-BF16 or AMX), else fp32.
    device : torch.device

    Returns
    -------
    str
        ``"fp32"`` or ``"bf16"``.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ModelError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_supports_bf16():
        return "bf16"
    return "fp32"


def onednn_fusion_available() -> bool:
    """True when torch's oneDNN (mkldnn) build offers convolution/linear + pointwise fusions."""
    try:
        return bool(
            torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        )
    except (AttributeError, RuntimeError):  # pragma: no cover
        return False


def fit_batch_size(
    wanted: int, free_bytes: float, slice_bytes: float, headroom: float = 0.8
) -> int:
    """Largest batch that fits in the free memory.

    Parameters
    ----------
    wanted : int
        The batch asked for (slices).
    free_bytes : float
        Free device memory, in bytes.
    slice_bytes : float
        Estimated peak memory of one slice, in bytes (``<= 0``: unknown).
    headroom : float
        Fraction of ``free_bytes`` the batch may use.

    Returns
    -------
    int
        From 1 to ``wanted``.
    """
    if slice_bytes <= 0:
        return max(1, wanted)
    return max(1, min(wanted, int(headroom * free_bytes // slice_bytes)))


class CudaMemory:
    """Free and peak memory of one CUDA device, as batch sizing needs them."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def free_bytes(self) -> int:
        """Free device memory plus what torch's allocator holds unused."""
        free, _ = torch.cuda.mem_get_info(self.device)
        idle = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return int(free + idle)

    def start(self) -> int:
        """Reset the peak counter; returns the memory allocated now."""
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device)

    def peak_since(self, start: int) -> int:
        """Peak allocation since :meth:`start`, above what was allocated then."""
        return torch.cuda.max_memory_allocated(self.device) - start
