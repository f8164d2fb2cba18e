"""Training tokens/s and peak memory: Rodimus, Rodimus+, Transformer++ and transformers' Llama (SDPA).

The benchmark lives in the package (rodimus_lab.bench.train) so that `rodimus-lab bench train` runs it
too; this script is the same entry point for those who run everything in benchmarks/.

    python benchmarks/bench_train.py                                   # eager and compiled, T = 2048, 8192
    python benchmarks/bench_train.py --models rodimus_plus --seq-lens 2048 --modes eager --profile
"""

from rodimus_lab.bench.train import main

if __name__ == "__main__":
    main()
