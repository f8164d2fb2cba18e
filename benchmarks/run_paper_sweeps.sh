#!/usr/bin/env bash
# The paper-figure sweeps (docs/paper_figures.md) on one GPU, within a time budget; run it again to continue.
#
#   bash benchmarks/run_paper_sweeps.sh mqar 500 [COMMIT]       # Fig. 1b, experiments/mqar_state_size.yaml
#   bash benchmarks/run_paper_sweeps.sh wikitext 450 [COMMIT]   # Fig. 1a, reduced, on the WikiText-2 files in .gpu/
#
# Points train $WORKERS at a time (default 6), each in its own process on the one GPU (rodimus-lab sweep
# --workers): one 2-layer model keeps an H200 busy for a small part of each step.
# BUDGET is in seconds: the sweep stops starting points 20 s before it (time to write the last lines and copy
# the results back), and a point cut by it resumes from its
# checkpoint if the same machine runs the command again (a fresh machine trains that point from its start).
# Points already in docs/results/<sweep>/results.jsonl are skipped: copy each call's results file back there
# (it is also copied to $OUT when that is set) and commit it between calls. Points run in priority order:
# every point at the first learning rate of the spec, then the second learning rate.
# COMMIT (or $RODIMUS_LAB_COMMIT), when given, is recorded with each point instead of what git finds there.
# SET="section.field=value ..." is passed to the sweep as --set, e.g. SET="train.log_every=50" (read the loss
# every 50 steps instead of every step: how a step runs, not what it computes, so done points stay done; the
# Trainer already replays each step as a CUDA graph on a GPU, train.cuda_graphs: auto).
# Needs torch and triton (a CUDA machine), pyyaml, tqdm, safetensors and tokenizers; not plotly: the figure is
# not drawn there (--no-figure): render where plotly is installed with
# `rodimus-lab sweep experiments/mqar_state_size.yaml --render --out docs/results/mqar_state_size`.
set -euo pipefail
which=${1:?usage: run_paper_sweeps.sh mqar|wikitext BUDGET_SECONDS [COMMIT]}
budget=${2:?usage: run_paper_sweeps.sh mqar|wikitext BUDGET_SECONDS [COMMIT]}
export RODIMUS_LAB_COMMIT=${3:-${RODIMUS_LAB_COMMIT:-}}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
if ! python3 -c "import rodimus_lab, rodimus_kernels" 2>/dev/null; then   # a copied tree, not installed
    mkdir -p /tmp/pp && ln -sfn "$PWD/kernels" /tmp/pp/rodimus_kernels
    export PYTHONPATH=$PWD:/tmp/pp${PYTHONPATH:+:$PYTHONPATH}
fi
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }

case $which in
mqar)
    spec=experiments/mqar_state_size.yaml; name=mqar_state_size; extra=()
    passes=("*--lr=0.003" "*--lr=0.001") ;;
wikitext)
    # Offline: WikiText-2's validation text to train on, its test text to evaluate (the only two splits
    # here: copy /path/to/wikitext-2/wiki.{valid,test}.tokens into .gpu/wikitext-2 and carry .gpu).
    # Reduced: 200 steps (12 passes over the 268k training tokens: the best evaluation comes before the
    # overfitting), every n of the spec, Transformer++ beside them.
    spec=experiments/wikitext_state_memory.yaml; name=wikitext_state_memory_wt2
    extra=(--source .gpu/wikitext-2 --set data.train_split=valid data.eval_split=test train.max_steps=200
           train.eval_every=25 train.checkpoint_every=100 train.warmup_steps=20)
    passes=("*--lr=0.003" "*--lr=0.001") ;;
*)
    echo "unknown sweep $which: mqar or wikitext" >&2; exit 2 ;;
esac

out=docs/results/$name
copy_back() {   # after every pass: a kill later (the device call's limit) must not lose finished points
    if [ -n "${OUT:-}" ] && [ -f "$out/results.jsonl" ]; then cp "$out/results.jsonl" "$OUT/$name.jsonl"; fi
}
for only in "${passes[@]}"; do
    [ "$(left)" -gt 60 ] || break
    # shellcheck disable=SC2086  # the patterns of a pass are separate words
    python3 -m rodimus_lab.cli sweep "$spec" --device cuda --out "$out" --runs "/tmp/sweeps/$name" \
        --budget "$(( $(left) - 20 ))" --progress false --no-figure --workers "${WORKERS:-6}" --only $only "${extra[@]}" \
        ${SET:+--set $SET}
    copy_back
done
python3 -m rodimus_lab.cli sweep "$spec" --list --out "$out" --runs "/tmp/sweeps/$name" "${extra[@]}"
