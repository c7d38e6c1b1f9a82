import numpy as np
import pytest

from tff_sparsify.partitions import partition

BALANCED = np.repeat(np.arange(10), 6)  # 10 classes x 6 examples.
UNBALANCED = np.random.default_rng(3).integers(0, 10, size=997)


def assert_exact_cover(split, num_examples):
    everything = np.concatenate(split.client_indices)
    assert len(everything) == num_examples
    np.testing.assert_array_equal(np.sort(everything), np.arange(num_examples))


def test_iid_is_a_random_equal_split():
    split = partition(np.arange(103) % 10, num_clients=10, scheme="iid", seed=1)
    assert_exact_cover(split, 103)
    assert sorted(split.examples_per_client()) == [10] * 7 + [11] * 3
    # Random, not contiguous blocks.
    assert not np.array_equal(split.client_indices[0], np.arange(len(split.client_indices[0])))


@pytest.mark.parametrize(
    "labels,num_clients,classes",
    [(BALANCED, 10, 2), (BALANCED, 5, 5), (UNBALANCED, 10, 2), (UNBALANCED, 100, 2), (UNBALANCED, 7, 3)],
)
def test_label_skew_gives_exactly_c_classes_and_covers_the_data(labels, num_clients, classes):
    split = partition(labels, num_clients, "label_skew", classes_per_client=classes, seed=1990)
    assert_exact_cover(split, len(labels))
    assert [len(c) for c in split.classes_per_client()] == [classes] * num_clients


def test_label_skew_on_balanced_data_cuts_equal_label_pure_shards():
    # 20 shards of 3 examples; each class is cut into exactly 2 shards, each client gets 2 of them.
    split = partition(BALANCED, 10, "label_skew", classes_per_client=2, seed=0)
    counts = split.class_counts()
    assert split.examples_per_client() == [6] * 10
    assert set(counts[counts > 0].tolist()) == {3}
    np.testing.assert_array_equal((counts > 0).sum(axis=0), [2] * 10)


def test_label_skew_pairs_vary_between_clients():
    split = partition(UNBALANCED, 100, "label_skew", classes_per_client=2, seed=1990)
    pairs = {tuple(c) for c in split.classes_per_client()}
    assert len(pairs) > 20


def test_dirichlet_covers_the_data_and_skews_with_small_alpha():
    skewed = partition(UNBALANCED, 10, "dirichlet", alpha=0.1, seed=5)
    even = partition(UNBALANCED, 10, "dirichlet", alpha=1000.0, seed=5)
    assert_exact_cover(skewed, len(UNBALANCED))
    assert min(skewed.examples_per_client()) > 0

    def mean_classes(split):
        return np.mean([len(c) for c in split.classes_per_client()])

    assert mean_classes(even) == 10
    assert mean_classes(skewed) < 6


@pytest.mark.parametrize(
    "scheme,kwargs", [("iid", {}), ("label_skew", {"classes_per_client": 2}), ("dirichlet", {"alpha": 0.5})]
)
def test_same_seed_same_split_other_seed_other_split(scheme, kwargs):
    def split(seed):
        return partition(UNBALANCED, 10, scheme, seed=seed, **kwargs).client_indices

    for a, b in zip(split(7), split(7)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(split(7), split(8)))


def test_describe_reports_examples_and_classes_per_client():
    labels = np.array([0, 0, 1, 1, 2, 2])
    split = partition(labels, 3, "label_skew", classes_per_client=1, seed=0)
    description = split.describe()
    assert description["num_clients"] == 3 and description["num_examples"] == 6
    assert sorted(c["classes"] for c in description["clients"]) == [[0], [1], [2]]
    assert [c["examples"] for c in description["clients"]] == [2, 2, 2]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 61}, r"num_clients \(61\) must be at most the number of examples \(60\)"),
        ({"scheme": "pathological"}, "partition must be one of"),
        ({"scheme": "label_skew"}, "classes_per_client is required"),
        ({"scheme": "label_skew", "classes_per_client": 11}, r"classes_per_client must be in \[1, 10\]"),
        ({"scheme": "label_skew", "classes_per_client": 0}, r"classes_per_client must be in \[1, 10\]"),
        ({"scheme": "label_skew", "classes_per_client": 2, "num_clients": 4}, "at least the number of classes"),
        ({"scheme": "label_skew", "classes_per_client": 10, "num_clients": 60}, "examples per class"),
        ({"scheme": "dirichlet"}, "alpha is required"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha must be > 0"),
    ],
)
def test_impossible_requests_name_the_argument(kwargs, match):
    args = {"num_clients": 10, "scheme": "iid", **kwargs}
    with pytest.raises(ValueError, match=match):
        partition(BALANCED, args.pop("num_clients"), args.pop("scheme"), **args)
