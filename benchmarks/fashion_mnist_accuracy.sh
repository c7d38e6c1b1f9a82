#!/usr/bin/env bash
# Real Fashion-MNIST, 10 clients, non-IID (2 classes each), 30 rounds of 1 local epoch, batch 32,
# SGD 0.02, seed 1990: FedAvg, FedSparsify-Global at 0.9 (unstructured, and 1x4 blocks), then the
# paper-style table (accuracy, params, comm. cost, gzip size, TFLite latency) in benchmarks/results/.
# Resumable: rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion_mnist.npz}
COMMON=(--dataset fashion_mnist --data-path "$DATA" --num-clients 10 --partition label_skew_random
        --classes-per-client 2 --rounds 30 --local-epochs 1 --batch-size 32
        --client-learning-rate 0.02 --seed 1990 --quiet)
RUNS=benchmarks/runs
.venv/bin/tff-sparsify run "${COMMON[@]}" --algorithm fedavg --output-dir $RUNS/fmnist_fedavg
.venv/bin/tff-sparsify run "${COMMON[@]}" --algorithm fedsparsify_global --final-sparsity 0.9 \
  --output-dir $RUNS/fmnist_global_0.9
.venv/bin/tff-sparsify run "${COMMON[@]}" --algorithm fedsparsify_global --final-sparsity 0.9 --block-size 1x4 \
  --output-dir $RUNS/fmnist_global_0.9_block1x4
.venv/bin/tff-sparsify table $RUNS/fmnist_fedavg $RUNS/fmnist_global_0.9 $RUNS/fmnist_global_0.9_block1x4 \
  --output-dir benchmarks/results/fmnist_0.9 --threads 1
