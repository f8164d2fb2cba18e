"""``python -m rodimus_lab ARGS`` is ``rodimus-lab ARGS``; it is how torchrun starts the processes of a
data-parallel run: ``torchrun --nproc_per_node=N -m rodimus_lab train ARGS``."""

import sys

from .cli import main

sys.exit(main())
