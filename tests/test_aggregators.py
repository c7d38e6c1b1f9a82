"""Tests of `MajorityVoteFactory` (paper eq. 2) on tiny hand-computed client values."""
import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_sparsify.learning import MajorityVoteFactory

KERNEL, BIAS = 4, 2
EXPLICIT_TYPE = tff.types.to_type(
    collections.OrderedDict(
        weights=[(np.float32, [KERNEL]), (np.float32, [BIAS])],
        masks=[(np.float32, [KERNEL]), (np.float32, [BIAS])],
    )
)
COUNT_TYPE = tff.types.TensorType(np.float32)


def explicit_process(**kwargs):
    return MajorityVoteFactory(**kwargs).create(EXPLICIT_TYPE, COUNT_TYPE)


@pytest.fixture(scope="module")
def paper_process():
    return explicit_process()


@pytest.fixture(scope="module")
def strict_process():
    return explicit_process(quorum=0.75)


@pytest.fixture(scope="module")
def keepers_process():
    return explicit_process(average_over="keepers")


def client(kernel, kernel_mask, bias):
    """One client's explicit value; the bias is not prunable, so its mask is all ones."""
    return collections.OrderedDict(
        weights=[np.array(kernel, np.float32), np.array(bias, np.float32)],
        masks=[np.array(kernel_mask, np.float32), np.ones(BIAS, np.float32)],
    )


def run(process, clients, counts):
    return process.next(process.initialize(), clients, counts)


def assert_merged(result, kernel, kernel_mask, bias):
    np.testing.assert_allclose(result["weights"][0], kernel, rtol=1e-6)
    np.testing.assert_allclose(result["weights"][1], bias, rtol=1e-6)
    np.testing.assert_array_equal(result["masks"][0], kernel_mask)
    np.testing.assert_array_equal(result["masks"][1], np.ones(BIAS))


# Votes on the kernel: 3, 2, 1, 1 of 3 clients.
THREE_CLIENTS = [
    client([1, 2, 0, 4], [1, 1, 0, 1], [1, 1]),
    client([4, 0, 6, 0], [1, 0, 1, 0], [2, 2]),
    client([7, 8, 0, 0], [1, 1, 0, 0], [3, 0]),  # An unpruned zero weight still votes to keep.
]

# Votes on the kernel: 2, 3, 2, 1 of 4 clients (shares 0.5, 0.75, 0.5, 0.25).
FOUR_CLIENTS = [
    client([4, 4, 4, 0], [1, 1, 1, 0], [1, 1]),
    client([8, 4, 0, 0], [1, 1, 0, 0], [1, 1]),
    client([0, 0, 8, 0], [0, 0, 1, 0], [1, 1]),
    client([0, 4, 0, 8], [0, 1, 0, 1], [1, 1]),
]


def test_three_clients_keep_positions_at_least_half_keep(paper_process):
    output = run(paper_process, THREE_CLIENTS, [2.0, 2.0, 2.0])
    assert_merged(output.result, kernel=[4, 10 / 3, 0, 0], kernel_mask=[1, 1, 0, 0], bias=[2, 1])


def test_measurements(paper_process):
    measurements = run(paper_process, THREE_CLIENTS, [2.0, 2.0, 2.0]).measurements
    # Keep shares over the 6 positions: 1, 2/3, 1/3, 1/3 (kernel), 1, 1 (bias).
    assert measurements["kept_fraction"] == pytest.approx(4 / 6)
    assert measurements["mean_client_sparsity"] == pytest.approx(5 / 18)
    assert measurements["agreement"] == pytest.approx(15 / 18)
    np.testing.assert_array_equal(measurements["vote_histogram"], [0, 0, 0, 2, 0, 0, 1, 0, 0, 3])
    assert measurements["vote_histogram"].dtype == np.int32
    assert measurements["num_clients"] == 3


def test_tie_is_kept_at_default_quorum(paper_process):
    output = run(paper_process, FOUR_CLIENTS, [1.0] * 4)
    assert_merged(output.result, kernel=[3, 3, 3, 0], kernel_mask=[1, 1, 1, 0], bias=[1, 1])
    np.testing.assert_array_equal(
        output.measurements["vote_histogram"], [0, 0, 1, 0, 0, 2, 0, 1, 0, 2]
    )


def test_unequal_example_counts_give_weighted_mean(paper_process):
    clients = [
        client([2, 2, 2, 2], [1, 1, 1, 1], [1, 0]),
        client([4, 4, 0, 4], [1, 1, 0, 1], [1, 0]),
        client([0, 8, 8, 0], [0, 1, 1, 0], [1, 8]),
    ]
    output = run(paper_process, clients, [1.0, 2.0, 5.0])
    kernel = [10 / 8, 50 / 8, 42 / 8, 10 / 8]
    assert_merged(output.result, kernel=kernel, kernel_mask=[1, 1, 1, 1], bias=[1, 5])


def test_higher_quorum_drops_more(strict_process):
    output = run(strict_process, FOUR_CLIENTS, [1.0] * 4)
    assert_merged(output.result, kernel=[0, 3, 0, 0], kernel_mask=[0, 1, 0, 0], bias=[1, 1])
    assert output.measurements["kept_fraction"] == pytest.approx(3 / 6)


def test_average_over_keepers(keepers_process):
    output = run(keepers_process, FOUR_CLIENTS, [1.0] * 4)
    assert_merged(output.result, kernel=[6, 4, 6, 0], kernel_mask=[1, 1, 1, 0], bias=[1, 1])


def test_keepers_mean_is_weighted_by_example_counts(keepers_process):
    output = run(keepers_process, FOUR_CLIENTS, [1.0, 3.0, 1.0, 1.0])
    assert_merged(output.result, kernel=[7, 4, 6, 0], kernel_mask=[1, 1, 1, 0], bias=[1, 1])


def test_model_deltas_merge_like_weights(paper_process, keepers_process):
    initial = np.float32([3, 6, 9, 12])
    pruned = [
        ([6, 3, 0, 0], [1, 1, 0, 0]),
        ([3, 0, 0, 6], [1, 0, 0, 1]),
        ([0, 6, 9, 3], [0, 1, 1, 1]),
    ]
    # Sent as TFF's `initial - pruned`: nonzero where a client pruned. The server's
    # `initial - merged delta`, masked, must be the merge of the pruned weights.
    deltas = [client(initial - np.float32(w), mask, [0, 0]) for w, mask in pruned]
    for process, merged in [(paper_process, [3, 3, 0, 3]), (keepers_process, [4.5, 4.5, 0, 4.5])]:
        result = run(process, deltas, [1.0] * 3).result
        np.testing.assert_array_equal((initial - result["weights"][0]) * result["masks"][0], merged)


def test_result_type_is_value_type(paper_process):
    assert paper_process.next.type_signature.result.result.member == EXPLICIT_TYPE
    assert paper_process.is_weighted


@pytest.mark.parametrize("quorum", [0, -0.5, 1.01])
def test_invalid_quorum(quorum):
    with pytest.raises(ValueError, match=r"quorum must be in \(0, 1\]"):
        MajorityVoteFactory(quorum=quorum)


def test_invalid_average_over():
    with pytest.raises(ValueError, match="average_over must be one of"):
        MajorityVoteFactory(average_over="clients")


def test_masks_must_match_weights():
    value_type = tff.types.to_type(
        collections.OrderedDict(weights=[(np.float32, [3])], masks=[(np.float32, [4])])
    )
    with pytest.raises(TypeError, match="masks must match weights"):
        MajorityVoteFactory().create(value_type, COUNT_TYPE)


def test_values_must_be_weights_and_masks_of_floats():
    with pytest.raises(TypeError, match="struct of"):
        MajorityVoteFactory().create(tff.types.TensorType(np.float32, [3]), COUNT_TYPE)
    value_type = tff.types.to_type(collections.OrderedDict(weights=[(np.int32, [3])], masks=[(np.int32, [3])]))
    with pytest.raises(TypeError, match="float tensors"):
        MajorityVoteFactory().create(value_type, COUNT_TYPE)
