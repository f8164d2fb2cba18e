#!/usr/bin/env bash
# One GPU session's checks, in the order they are needed, each under its own time limit, every line of output
# in $OUT/log as it comes (a device call that hits its limit returns nothing else), results copied to $OUT.
#
#   bash benchmarks/run_gpu_checks.sh tests     # every `gpu`-marked test (kernels, fused model, prefill, compile)
#   bash benchmarks/run_gpu_checks.sh train     # bench train, eager, T = 2048 and 8192 (docs/benchmarks.md)
#   bash benchmarks/run_gpu_checks.sh compiled  # bench train, compiled, T = 2048, Rodimus+ and Llama: reduce-overhead,
#                                               # then default with a profile (its own call: ~5 minutes on a fresh machine)
#   bash benchmarks/run_gpu_checks.sh profile   # the top kernels of one eager step, Rodimus / Rodimus+ / Llama, T = 2048
#   bash benchmarks/run_gpu_checks.sh host      # bench host on this machine's CPU (the eager step's host work)
#   bash benchmarks/run_gpu_checks.sh graphed   # the CUDA-graph step's gpu tests, then bench train eager + graphed,
#                                               # T = 2048 and 8192 (about 4 minutes)
#   bash benchmarks/run_gpu_checks.sh all       # train, profile, tests (the timings first, on a quiet machine)
#
# Timings are only worth keeping from a quiet machine: the script prints what else runs on it first.
# The paper sweeps have their own script, benchmarks/run_paper_sweeps.sh.
set -uo pipefail
what=${1:?usage: run_gpu_checks.sh tests|train|compiled|profile|host|graphed|all}
case $what in tests|train|compiled|profile|host|graphed|all) ;;
*) echo "unknown check $what: tests, train, compiled, profile, host, graphed or all" >&2; exit 2 ;;
esac
export PYTHONUNBUFFERED=1 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
if ! python3 -c "import rodimus_lab, rodimus_kernels" 2>/dev/null; then   # a copied tree, not installed
    mkdir -p /tmp/pp && ln -sfn "$PWD/kernels" /tmp/pp/rodimus_kernels
    export PYTHONPATH=$PWD:/tmp/pp${PYTHONPATH:+:$PYTHONPATH}
fi
out=${OUT:-runs/gpu_checks}
mkdir -p "$out"
commit=${RODIMUS_LAB_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
start=$(date +%s)
say() { echo "[$(( $(date +%s) - start )) s] $*" | tee -a "$out/log"; }
run() {   # run LIMIT_SECONDS COMMAND...: its output to the log as it comes; a hung step cannot take the rest
    local limit=$1; shift
    say "\$ $*"
    timeout -k 15 "$limit" "$@" 2>&1 | grep --line-buffered -v '^W[0-9]\{4\} ' | tee -a "$out/log"
    say "exit ${PIPESTATUS[0]}"
}

say "commit $commit on $(hostname)"
ps aux --sort=-%cpu | head -6 | tee -a "$out/log"
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv | tee -a "$out/log"

case $what in train|all)
    run 240 python3 -m rodimus_lab.bench.train --seq-lens 2048,8192 --modes eager \
        --out "$out/train_h200_eager_$commit.json" ;;
esac
case $what in profile|all)
    run 150 python3 -m rodimus_lab.bench.train --models rodimus,rodimus_plus,llama --seq-lens 2048 --modes eager \
        --steps 3 --profile --out "$out/profile_h200_eager_$commit.json" ;;
esac
case $what in tests|all)   # -v: each test's name and result reach the log as it finishes, even if the limit cuts the run
    run "${TESTS_LIMIT:-300}" python3 -m pytest tests -m gpu -v -p no:cacheprovider -rs --tb=short \
        --continue-on-collection-errors --timeout 300 --timeout-method thread ;;
esac
case $what in compiled)   # the second mode reuses the first's Inductor cache
    run 300 python3 -m rodimus_lab.bench.train --models rodimus_plus,llama --seq-lens 2048 --modes compiled \
        --compile-mode reduce-overhead --out "$out/train_h200_compiled_overhead_$commit.json"
    run 240 python3 -m rodimus_lab.bench.train --models rodimus_plus,llama --seq-lens 2048 --modes compiled \
        --compile-mode default --profile --profile-top 70 --out "$out/train_h200_compiled_default_$commit.json" ;;
esac
case $what in graphed)
    run 90 python3 -m pytest tests/test_graphed.py -m gpu -v -p no:cacheprovider -rs --tb=short
    run 140 python3 -m rodimus_lab.bench.train --seq-lens 2048,8192 --modes eager,graphed \
        --out "$out/train_h200_graphed_$commit.json" ;;
esac
case $what in host)
    run 120 python3 -m rodimus_lab.bench.host --out "$out/host_$commit.json" ;;
esac
say "done"
