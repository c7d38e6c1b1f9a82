#!/usr/bin/env bash
# The FedSparsify paper's FashionMNIST experiments on its own protocol: the authors' non-IID split
# (label_skew: clients 0-1 hold classes {0,1}, 2-3 {2,3}, ...), FC 784-128-128-10, 200 rounds of 4
# local epochs, batch 32, SGD 0.02, seed 1990.
#   - 10 clients, all training every round: FedAvg; FedSparsify-Global at 0.8, 0.85, 0.9, 0.95, 0.99;
#     FedSparsify-Local at 0.9 and 0.99 (paper table 2, figure 2c);
#   - the same at s_f = 0.99 for the other methods of figure 2c: FedProx, Random, SNIP, GraSP,
#     OneShot with fine-tuning, PruneFL;
#   - 100 clients, 10 sampled per round (figure 3c): FedAvg, FedSparsify-Global at 0.9 and 0.99,
#     FedSparsify-Local at 0.9.
# Then the tables beside the paper's numbers in experiments/results/<group>/table/. About 12 minutes
# per 10-client run alone on 2 CPU cores. One cell after another, in the order below; every run
# checkpoints every round: rerun this script to resume (STOP_AFTER=N limits one invocation to N
# rounds per run; CELLS="a b" runs only those cells).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/fashion_mnist.npz}
RUNS=${RUNS:-experiments/results}
TFF_SPARSIFY=${TFF_SPARSIFY:-.venv/bin/tff-sparsify}
LIMIT=()
if [ -n "${STOP_AFTER:-}" ]; then LIMIT=(--stop-after "$STOP_AFTER"); fi
G=fashion_mnist_noniid2
H=fashion_mnist_noniid2_100clients
DEFAULT_CELLS="$G/fedavg $G/global_0.9 $G/global_0.99 $G/local_0.9 \
  $H/fedavg $H/global_0.9 $H/global_0.99 $H/local_0.9 \
  $G/global_0.8 $G/global_0.85 $G/global_0.95 $G/local_0.99 \
  $G/fedprox $G/random_0.99 $G/snip_0.99 $G/grasp_0.99 $G/oneshot_finetune_0.99 $G/prunefl_0.99"
for cell in ${CELLS:-$DEFAULT_CELLS}; do
  "$TFF_SPARSIFY" grid run "$cell" --data-path "fashion_mnist=$DATA" --runs-dir "$RUNS" "${LIMIT[@]}"
done
if [ -z "${STOP_AFTER:-}" ]; then  # Tables of the finished runs.
  "$TFF_SPARSIFY" grid summary "$G/*" "$H/*" --data-path "fashion_mnist=$DATA" --runs-dir "$RUNS"
fi
