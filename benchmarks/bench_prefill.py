"""Prefill of a long prompt (4096 tokens by default) through the kernels vs the PyTorch reference: time,
and the relative error of the state it hands to decoding (DDTS states, conv buffers, KV cache) and of the
last token's logits against the float32 reference.

The benchmark lives in the package (rodimus_lab.bench.prefill); this script is the same entry point for
those who run everything in benchmarks/.

    python benchmarks/bench_prefill.py                                  # Rodimus and Rodimus+, d_model 768, T = 4096
    python benchmarks/bench_prefill.py --prompt-len 16384 --models rodimus
"""

from rodimus_lab.bench.prefill import main

if __name__ == "__main__":
    main()
