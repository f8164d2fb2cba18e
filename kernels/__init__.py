"""rodimus_kernels — fused Triton kernels for rodimus-lab (installed from the folder ``kernels/``).

Each kernel names its reference twin in ``rodimus_lab`` and is tested against it.
The kernels themselves arrive with their own issues; this package is importable now so
that ``backend="auto"`` can look for them.
"""

from .ddts import ddts, ddts_step
from .sw_ska import sw_ska, sw_ska_decode

__all__: list[str] = ["ddts", "ddts_step"]
__all__ += ["sw_ska", "sw_ska_decode"]
