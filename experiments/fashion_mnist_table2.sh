#!/usr/bin/env bash
# Paper table 2 (FashionMNIST, 10 clients, non-IID with 2 classes each), full protocol: 200 rounds of
# 4 local epochs, batch 32, SGD 0.02, seed 1990. FedAvg; FedSparsify-Global at 0.8, 0.85, 0.9, 0.95, 0.99;
# FedSparsify-Local at 0.9. Then the table beside the paper's numbers, in
# experiments/results/fashion_mnist_noniid2/table/. About 12 minutes per run alone on 2 CPU cores (3.6 s per round).
# Every run checkpoints every round: rerun this script to resume (STOP_AFTER=N limits one invocation
# to N rounds per run, e.g. to spread the work over several sessions).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion_mnist.npz}
RUNS=${RUNS:-experiments/results}
LIMIT=()
if [ -n "${STOP_AFTER:-}" ]; then LIMIT=(--stop-after "$STOP_AFTER"); fi
G=fashion_mnist_noniid2
.venv/bin/tff-sparsify grid run "$G/fedavg" "$G/global_0.8" "$G/global_0.85" "$G/global_0.9" "$G/global_0.95" \
  "$G/global_0.99" "$G/local_0.9" \
  --data-path "fashion_mnist=$DATA" --runs-dir "$RUNS" "${LIMIT[@]}"
if [ -z "${STOP_AFTER:-}" ]; then  # The table needs finished runs.
  .venv/bin/tff-sparsify grid summary "$G/fedavg" "$G/global_*" "$G/local_*" \
    --data-path "fashion_mnist=$DATA" --runs-dir "$RUNS"
fi
