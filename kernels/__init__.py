"""rodimus_kernels — fused Triton kernels for rodimus-lab (installed from the folder ``kernels/``).

One file per op (``ddts.py``, ``sw_ska.py``: checks, launch plans, autograd), its Triton kernels
(``<op>_triton.py``) and its plain PyTorch twin for CPUs (``<op>_torch.py``); ``dispatch.py`` decides
where each call runs. Each op names its reference twin in ``rodimus_lab`` and is tested against it.
"""

from .ddts import ddts, ddts_step
from .sw_ska import sw_ska, sw_ska_decode

__all__ = ["ddts", "ddts_step", "sw_ska", "sw_ska_decode"]
