"""Decoding latency and state memory vs context length: Rodimus, Rodimus+, Transformer++.

The benchmark lives in the package (rodimus_lab.bench.decode) so that `rodimus-lab bench decode` runs it
too; this script is the same entry point for those who run everything in benchmarks/.

    python benchmarks/bench_decode.py --device cuda --out docs/results/decode_h200.json
    python benchmarks/bench_decode.py --device cpu --threads 1 --d-model 256 --contexts 512,1024,4096
"""

from rodimus_lab.bench.decode import main

if __name__ == "__main__":
    main()
