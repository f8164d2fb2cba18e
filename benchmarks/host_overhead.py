"""Host (Python and dispatcher) time of one eager training step, measured on CPU with the Triton launches
stubbed out: Rodimus, Rodimus+, Transformer++ and transformers' Llama (SDPA) at the bench's 12 layers.

The benchmark lives in the package (rodimus_lab.bench.host) so that `rodimus-lab bench host` runs it too;
this script is the same entry point for those who run everything in benchmarks/.

    python benchmarks/host_overhead.py                      # all four models, median of 5 × 10 steps
    python benchmarks/host_overhead.py --models rodimus_plus --cprofile
"""

from rodimus_lab.bench.host import main

if __name__ == "__main__":
    main()
