import collections
import json

import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify.core.metrics import (
    CommunicationLedger,
    RoundCost,
    dense_fedavg_cost,
    encoded_bytes,
    schedule_cost,
)
from tff_sparsify.core.schedules import SparsitySchedule

FMNIST_PARAMS, FMNIST_KERNELS = 118_282, 118_016  # 784-128-128-10 FC; the rest are biases.
FMNIST_DENSE = 473_128_000


# --- Paper accounting: golden numbers (appendix C, tables 1-2). ---


def test_dense_fedavg_fashion_mnist_is_473_million():
    assert dense_fedavg_cost(FMNIST_PARAMS, 10, 200) == FMNIST_DENSE  # Table 2: 473.


def test_schedule_cost_without_pruning_equals_dense_fedavg():
    ledger = schedule_cost(FMNIST_PARAMS, FMNIST_KERNELS, 10, SparsitySchedule(0.0, 200))
    assert ledger.params == FMNIST_DENSE
    assert len(ledger) == 200


def test_fashion_mnist_0_9_within_2_percent_of_paper():
    ledger = schedule_cost(FMNIST_PARAMS, FMNIST_KERNELS, 10, SparsitySchedule(0.9, 200))
    assert ledger.params == 157_142_840
    assert ledger.params == pytest.approx(155e6, rel=0.02)
    assert ledger.ratio_to(FMNIST_DENSE) == pytest.approx(3.011, abs=1e-3)  # Paper: x3.04.
    assert ledger.mbit == pytest.approx(157_142_840 * 32 / 1e6)


# Paper table 2 (FashionMNIST FC) and table 1 (CIFAR-10 CNN in M parameters; CIFAR-100 VGG-16 in
# Mbit), 10 clients. They match, after truncation to the printed digits, the accounting with every
# trainable parameter prunable and end-of-round upload counts.
@pytest.mark.parametrize(
    "num_params,num_prunable,rounds,final_sparsity,paper,unit",
    [
        (FMNIST_PARAMS, FMNIST_PARAMS, 200, 0.8, 190, "params"),
        (FMNIST_PARAMS, FMNIST_PARAMS, 200, 0.85, 173, "params"),
        (FMNIST_PARAMS, FMNIST_PARAMS, 200, 0.9, 155, "params"),
        (FMNIST_PARAMS, FMNIST_PARAMS, 200, 0.95, 137, "params"),
        (1_610_314, 1_609_930, 200, 0.8, 2_596, "params"),
        (1_610_314, 1_609_930, 200, 0.99, 1_683, "params"),
        (14_782_884, 14_774_436, 100, 0.9, 314_253, "mbit"),
        (14_782_884, 14_774_436, 100, 0.99, 251_067, "mbit"),
    ],
)
def test_end_of_round_uploads_reproduce_paper_tables(
    num_params, num_prunable, rounds, final_sparsity, paper, unit
):
    schedule = SparsitySchedule(final_sparsity, rounds)
    ledger = schedule_cost(num_params, num_prunable, 10, schedule, upload="end")
    total = ledger.params / 1e6 if unit == "params" else ledger.mbit
    assert abs(total - paper) < 1.0


def test_end_of_round_uploads_cost_less_than_start_of_round():
    schedule = SparsitySchedule(0.9, 200)
    start = schedule_cost(FMNIST_PARAMS, FMNIST_KERNELS, 10, schedule)
    end = schedule_cost(FMNIST_PARAMS, FMNIST_KERNELS, 10, schedule, upload="end")
    assert [r.download_params for r in start.rounds] == [r.download_params for r in end.rounds]
    assert sum(r.upload_params for r in end.rounds) < sum(r.upload_params for r in start.rounds)


def test_schedule_cost_small_by_hand():
    # s(1) = 0, s(2) = 0.5 (last round): k = 0, 0, 5 of 10 prunable, 12 parameters, 3 clients.
    schedule = SparsitySchedule(0.5, 2)
    start = schedule_cost(12, 10, 3, schedule)
    assert [r.download_params for r in start.rounds] == [36, 36]
    assert [r.upload_params for r in start.rounds] == [36, 36]
    end = schedule_cost(12, 10, 3, schedule, upload="end", masks_per_round=3)
    assert [r.upload_params for r in end.rounds] == [36, 21]
    assert [r.mask_bits for r in end.rounds] == [30, 30]
    assert end.params == 36 + 36 + 36 + 21


# --- Ledgers by hand. ---


def test_round_cost_from_counts():
    cost = RoundCost.from_counts(3, broadcast_nnz=10, upload_nnz=[10, 9, 8])
    assert (cost.download_params, cost.upload_params, cost.mask_bits) == (30, 27, 0)
    assert cost.params == 57
    assert cost.mbit == pytest.approx(57 * 32 / 1e6)
    assert cost.bytes is None
    assert RoundCost.from_counts(3, 10, 7).upload_params == 21  # One int: every client uploads it.


def test_two_round_global_ledger():
    ledger = CommunicationLedger()
    first = ledger.add(RoundCost.from_counts(3, broadcast_nnz=10, upload_nnz=10, download_bytes=120, upload_bytes=120))
    assert (first.params, ledger.params) == (60, 60)
    ledger.add(RoundCost.from_counts(3, broadcast_nnz=6, upload_nnz=[6, 6, 5], download_bytes=78, upload_bytes=74))
    assert ledger.params == 30 + 18 + 30 + 17
    assert ledger.mbit == pytest.approx(95 * 32 / 1e6)
    assert ledger.bytes == 240 + 152


def test_local_ledger_counts_one_mask_per_client():
    ledger = CommunicationLedger()
    cost = ledger.add(RoundCost.from_counts(3, broadcast_nnz=0, upload_nnz=0, num_prunable=100, masks_per_round=3))
    assert cost.mask_bits == 300
    assert cost.mbit == pytest.approx(0.0003)
    ledger.add(RoundCost.from_counts(3, 50, [40, 40, 40], num_prunable=100, masks_per_round=3))
    assert ledger.mask_bits == 600
    assert ledger.mbit == pytest.approx((150 + 120) * 32 / 1e6 + 600 / 1e6)


def test_bytes_unknown_if_any_round_lacks_them():
    measured = RoundCost(1, 1, download_bytes=4, upload_bytes=4)
    ledger = CommunicationLedger([measured, RoundCost(1, 1)])
    assert ledger.bytes is None
    assert RoundCost(1, 1, download_bytes=4).bytes is None


def test_ratio_to_ledger_and_number():
    dense = CommunicationLedger([RoundCost(60, 60), RoundCost(60, 60)])
    sparse = CommunicationLedger([RoundCost(60, 60), RoundCost(30, 30)])
    assert sparse.ratio_to(dense) == pytest.approx(240 / 180)
    assert sparse.ratio_to(240) == pytest.approx(240 / 180)
    assert dense.ratio_to(dense) == 1.0
    with_masks = CommunicationLedger([RoundCost(30, 30, mask_bits=64)])
    assert with_masks.ratio_to(dense, unit="mbit") == pytest.approx(240 * 32 / (60 * 32 + 64))
    sized = CommunicationLedger([RoundCost(1, 1, download_bytes=10, upload_bytes=30)])
    assert sized.ratio_to(80, unit="bytes") == 2.0


def test_ratio_to_rejects_undefined_ratios():
    with pytest.raises(ValueError, match="0 params"):
        CommunicationLedger().ratio_to(10)
    with pytest.raises(ValueError, match="without encoded bytes"):
        CommunicationLedger([RoundCost(1, 1)]).ratio_to(10, unit="bytes")
    with pytest.raises(ValueError, match="unit"):
        CommunicationLedger([RoundCost(1, 1)]).ratio_to(10, unit="bits")
    with pytest.raises(ValueError, match="reference"):
        CommunicationLedger([RoundCost(1, 1)]).ratio_to(-1)


def test_round_cost_json_round_trip():
    cost = RoundCost(np.int64(12), 11, mask_bits=24, download_bytes=np.int64(100), upload_bytes=90)
    restored = RoundCost.from_dict(json.loads(json.dumps(cost.to_dict())))
    assert restored == cost and type(restored.download_params) is int


# --- Input errors name the argument. ---


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: dense_fedavg_cost(-1, 10, 200), "num_params"),
        (lambda: dense_fedavg_cost(100, 0, 200), "clients_per_round"),
        (lambda: dense_fedavg_cost(100, 10, -1), "rounds"),
        (lambda: dense_fedavg_cost(100, 10, 2.5), "rounds"),
        (lambda: schedule_cost(100, 10, 0, SparsitySchedule(0.5, 2)), "clients_per_round"),
        (lambda: schedule_cost(100, 101, 1, SparsitySchedule(0.5, 2)), "num_prunable"),
        (
            lambda: schedule_cost(100, 10, 1, SparsitySchedule(0.5, 2), masks_per_round=-1),
            "masks_per_round",
        ),
        (lambda: schedule_cost(100, 10, 1, SparsitySchedule(0.5, 2), upload="middle"), "upload"),
        (lambda: RoundCost(-1, 0), "download_params"),
        (lambda: RoundCost(0, 0, mask_bits=-3), "mask_bits"),
        (lambda: RoundCost(0, 0, upload_bytes=-3), "upload_bytes"),
        (lambda: RoundCost.from_counts(0, 1, 1), "clients"),
        (lambda: RoundCost.from_counts(2, 1, [1]), "upload_nnz"),
        (lambda: RoundCost.from_counts(2, 1, [1, -1]), r"upload_nnz\[1\]"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_schedule_must_be_a_schedule():
    with pytest.raises(TypeError, match="schedule"):
        schedule_cost(100, 10, 1, 0.9)


# --- Honest wire bytes. ---


def with_nonzeros(size, count, dtype=np.float32):
    values = np.zeros(size, dtype)
    values[:count] = np.arange(1, count + 1)
    return values


# dense = 4n, bitmap = ceil(n / 8) + 4z, coordinates = 8z: coordinates win only if 4z < ceil(n / 8).
@pytest.mark.parametrize(
    "size,nonzeros,expected",
    [
        (16, 0, 0),  # All zero: an empty coordinate list.
        (16, 1, 6),  # Bitmap 2 + 4 beats coordinates 8.
        (16, 6, 26),  # Bitmap 2 + 24.
        (16, 15, 62),  # Bitmap 2 + 60 < dense 64.
        (16, 16, 64),  # Dense (bitmap would be 66).
        (256, 1, 8),  # Coordinates 8 < bitmap 32 + 4.
        (256, 7, 56),  # Coordinates 56 < bitmap 60.
        (256, 9, 68),  # Bitmap 68 < coordinates 72.
    ],
)
def test_encoded_bytes_of_one_tensor(size, nonzeros, expected):
    assert encoded_bytes([with_nonzeros(size, nonzeros)]).numpy() == expected


def test_encoded_bytes_sums_tensors_and_keeps_shape_irrelevant():
    tensors = [with_nonzeros(256, 1).reshape(16, 16), with_nonzeros(16, 6), with_nonzeros(16, 16)]
    total = encoded_bytes(tensors)
    assert total.dtype == tf.int64 and total.shape == ()
    assert total.numpy() == 8 + 26 + 64


def test_encoded_bytes_rounds_the_bitmap_up_and_uses_the_value_size():
    assert encoded_bytes([with_nonzeros(9, 4)]).numpy() == 2 + 16  # ceil(9 / 8) = 2 < dense 36.
    assert encoded_bytes([with_nonzeros(16, 6, np.float64)]).numpy() == 2 + 48  # 8-byte values.
    assert encoded_bytes([]).numpy() == 0


def test_encoded_bytes_of_nested_structures():
    nest = collections.OrderedDict(kernel=with_nonzeros(16, 6), bias=[with_nonzeros(256, 1)])
    assert encoded_bytes(nest).numpy() == 26 + 8


def test_encoded_bytes_inside_tf_function_with_unknown_shapes():
    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, None], tf.float32)]
    )
    def wire(a, b):
        return encoded_bytes([a, b])

    assert wire(with_nonzeros(16, 6), np.zeros((4, 4), np.float32)).numpy() == 26
    assert wire(with_nonzeros(16, 16), with_nonzeros(256, 1).reshape(16, 16)).numpy() == 64 + 8


def test_encoded_bytes_inside_tff_computation():
    import tensorflow_federated as tff

    @tff.tensorflow.computation(
        collections.OrderedDict(
            a=tff.TensorType(np.float32, [16]), b=tff.TensorType(np.float32, [16, 16])
        )
    )
    def wire(weights):
        return encoded_bytes(weights)

    weights = collections.OrderedDict(
        a=with_nonzeros(16, 6), b=with_nonzeros(256, 1).reshape(16, 16)
    )
    value = wire(weights)
    assert value == 26 + 8
