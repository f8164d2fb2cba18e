"""Where a training step's memory goes: bytes saved for the backward per module and per tensor, on the
kernel path, run on a CPU, and the peak they predict at the bench's sizes (docs/benchmarks.md, "Where
Rodimus+'s training memory goes").

The tool lives in the package (rodimus_lab.bench.memory) so that `rodimus-lab bench memory` runs it too;
this script is the same entry point for those who run everything in benchmarks/.

    python benchmarks/saved_activations.py                          # Rodimus, Rodimus+, Transformer++
    python benchmarks/saved_activations.py --models rodimus_plus --tensors
"""

from rodimus_lab.bench.memory import main

if __name__ == "__main__":
    main()
