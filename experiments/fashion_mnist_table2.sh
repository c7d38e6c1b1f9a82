#!/usr/bin/env bash
# Paper table 2 (FashionMNIST, non-IID), full protocol: 10 clients with 2 classes each, all
# participating, 200 rounds of 4 local epochs, batch 32, SGD 0.02, seed 1990. FedAvg; FedSparsify-
# Global at 0.8, 0.9, 0.95, 0.99; FedSparsify-Local at 0.9. Then the paper-style table and plots.
# Each run checkpoints every round: rerun this script to resume (STOP_AFTER=N limits one invocation
# to N rounds per run, e.g. to spread the work over several sessions).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion_mnist.npz}
RUNS=${RUNS:-experiments/runs/fashion_mnist_noniid2}
LIMIT=()
if [ -n "${STOP_AFTER:-}" ]; then LIMIT=(--stop-after "$STOP_AFTER"); fi
COMMON=(--dataset fashion_mnist --data-path "$DATA" --num-clients 10 --partition label_skew
        --classes-per-client 2 --rounds 200 --local-epochs 4 --batch-size 32
        --client-learning-rate 0.02 --seed 1990 "${LIMIT[@]}")
.venv/bin/tff-sparsify run "${COMMON[@]}" --algorithm fedavg --output-dir "$RUNS/fedavg"
for s in 0.8 0.9 0.95 0.99; do
  .venv/bin/tff-sparsify run "${COMMON[@]}" --algorithm fedsparsify_global --final-sparsity "$s" \
    --output-dir "$RUNS/global_$s"
done
.venv/bin/tff-sparsify run "${COMMON[@]}" --algorithm fedsparsify_local --final-sparsity 0.9 \
  --output-dir "$RUNS/local_0.9"
if [ -z "${STOP_AFTER:-}" ]; then  # The table needs finished runs.
  .venv/bin/tff-sparsify table "$RUNS/fedavg" "$RUNS"/global_* "$RUNS/local_0.9" --output-dir "$RUNS/table"
fi
