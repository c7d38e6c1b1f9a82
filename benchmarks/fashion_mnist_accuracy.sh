#!/usr/bin/env bash
# FedSparsify-Global at 0.9 vs FedAvg on real Fashion-MNIST: 10 clients, non-IID (2 classes each),
# 30 rounds of 1 local epoch, batch 32, SGD 0.02 (issue 3's acceptance run). Resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion_mnist.npz}
COMMON=(--dataset fashion_mnist --data-path "$DATA" --num-clients 10 --partition label_skew
        --classes-per-client 2 --rounds 30 --local-epochs 1 --batch-size 32
        --client-learning-rate 0.02 --seed 1990 --quiet)
for algorithm in fedavg fedsparsify_global; do
  .venv/bin/tff-sparsify run "${COMMON[@]}" --algorithm "$algorithm" --final-sparsity 0.9 \
    --output-dir "benchmarks/runs/fmnist_noniid2_${algorithm}"
done
