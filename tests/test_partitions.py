import numpy as np
import pytest

from tff_sparsify.core.partitions import partition

BALANCED = np.repeat(np.arange(10), 6)  # 10 classes x 6 examples.
UNBALANCED = np.random.default_rng(3).integers(0, 10, size=997)


def left_out(split):
    """Sorted indices of the examples no client holds."""
    return np.setdiff1d(np.arange(len(split.labels)), np.concatenate(split.client_indices))


def assert_exact_cover(split, num_examples):
    everything = np.concatenate(split.client_indices)
    assert len(everything) == num_examples and split.num_left_out == 0 and len(left_out(split)) == 0
    np.testing.assert_array_equal(np.sort(everything), np.arange(num_examples))


def assert_cover_without_overlap(split):
    """Clients' indices and the left-out ones are pairwise disjoint and together are all examples."""
    everything = np.concatenate([*split.client_indices, left_out(split)])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(split.labels)))
    assert split.num_left_out == len(left_out(split))


def class_sets(split):
    return [set(classes) for classes in split.classes_per_client()]


# The paper's rule on the real per-class counts: (labels, num_clients, classes_per_client, the class
# sets of the clients in order, examples per client).
FMNIST, CIFAR10, CIFAR100 = (np.repeat(np.arange(k), n) for k, n in ((10, 6000), (10, 5000), (100, 500)))
PAPER_SPLITS = {
    "fmnist_10": (FMNIST, 10, 2, [{0, 1}] * 2 + [{2, 3}] * 2 + [{4, 5}] * 2 + [{6, 7}] * 2 + [{8, 9}] * 2, 6000),
    "fmnist_100": (FMNIST, 100, 2, [{0, 1}] * 20 + [{2, 3}] * 20 + [{4, 5}] * 20 + [{6, 7}] * 20 + [{8, 9}] * 20, 600),
    "cifar10_10": (CIFAR10, 10, 5, [set(range(5))] * 5 + [set(range(5, 10))] * 5, 5000),
    "cifar10_100": (CIFAR10, 100, 5, [set(range(5))] * 50 + [set(range(5, 10))] * 50, 500),
    "cifar100_10": (CIFAR100, 10, 50, [set(range(50))] * 5 + [set(range(50, 100))] * 5, 5000),
    "cifar100_100": (CIFAR100, 100, 50, [set(range(50))] * 50 + [set(range(50, 100))] * 50, 500),
}


@pytest.mark.parametrize("shuffled", [False, True], ids=["sorted", "shuffled"])
@pytest.mark.parametrize("case", PAPER_SPLITS)
def test_label_skew_is_the_papers_rule_on_the_papers_datasets(case, shuffled):
    labels, num_clients, classes, expected_sets, expected_examples = PAPER_SPLITS[case]
    if shuffled:  # The stable sort makes the class sets independent of the order of the examples.
        labels = np.random.default_rng(0).permutation(labels)
    split = partition(labels, num_clients, "label_skew", classes_per_client=classes, seed=1990)
    assert class_sets(split) == expected_sets
    assert split.examples_per_client() == [expected_examples] * num_clients
    assert split.num_left_out == 0
    assert_cover_without_overlap(split)


def test_label_skew_takes_shards_of_the_stable_sort_in_order():
    # Stable sort: [0 0 0 1 1 1 2 2] -> shards {0}, {0,1}, {1}, {2}. Client 0 takes shards 0 and 2
    # (shard 1 repeats label 0); client 1 takes shards 1 and 3, and so holds 3 classes.
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    split = partition(labels, 2, "label_skew", classes_per_client=2)
    assert [idx.tolist() for idx in split.client_indices] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert split.classes_per_client() == [[0, 1], [0, 1, 2]]


def test_label_skew_leaves_out_the_end_of_the_stable_sort():
    # N = 103, K = 5, c = 2: 10 shards of 10 (one per class), the last 3 examples of class 9 left out.
    labels = np.random.default_rng(4).permutation(np.repeat(np.arange(10), [10] * 9 + [13]))
    split = partition(labels, 5, "label_skew", classes_per_client=2)
    assert class_sets(split) == [{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}]
    assert split.examples_per_client() == [20] * 5
    assert split.num_left_out == 3
    np.testing.assert_array_equal(left_out(split), np.flatnonzero(labels == 9)[-3:])
    assert_cover_without_overlap(split)
    description = split.describe()
    assert (description["num_examples"], description["num_left_out"]) == (100, 3)


def test_label_skew_raises_when_a_client_finds_no_shard_of_new_labels():
    # 5 classes x 10, K = 5, c = 2: clients 0-3 hold {0,1}, {0,1}, {2,3}, {2,3}; both shards left are {4}.
    labels = np.repeat(np.arange(5), 10)
    with pytest.raises(ValueError, match=r"num_clients=5 and classes_per_client=2: client 4 finds only 1"):
        partition(labels, 5, "label_skew", classes_per_client=2)


def test_label_skew_ignores_the_seed():
    def split(seed):
        return partition(UNBALANCED, 10, "label_skew", classes_per_client=1, seed=seed).client_indices

    for a, b in zip(split(7), split(8)):
        np.testing.assert_array_equal(a, b)


def test_label_skew_on_the_real_fashion_mnist_labels(fashion_mnist_npz):
    with np.load(fashion_mnist_npz) as npz:
        labels = npz["y_train"]
    split = partition(labels, 10, "label_skew", classes_per_client=2)
    assert class_sets(split) == PAPER_SPLITS["fmnist_10"][3]
    assert split.examples_per_client() == [6000] * 10 and split.num_left_out == 0


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
def test_label_skew_random_gives_exactly_c_classes_and_covers_the_data(labels, num_clients, classes):
    split = partition(labels, num_clients, "label_skew_random", classes_per_client=classes, seed=1990)
    assert_exact_cover(split, len(labels))
    assert [len(c) for c in split.classes_per_client()] == [classes] * num_clients


def test_label_skew_random_on_balanced_data_cuts_equal_label_pure_shards():
    # 20 shards of 3 examples; each class is cut into exactly 2 shards, each client gets 2 of them.
    split = partition(BALANCED, 10, "label_skew_random", classes_per_client=2, seed=0)
    counts = split.class_counts()
    assert split.examples_per_client() == [6] * 10
    assert set(counts[counts > 0].tolist()) == {3}
    np.testing.assert_array_equal((counts > 0).sum(axis=0), [2] * 10)


def test_label_skew_random_pairs_vary_between_clients():
    split = partition(UNBALANCED, 100, "label_skew_random", classes_per_client=2, seed=1990)
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
    "scheme,kwargs", [("iid", {}), ("label_skew_random", {"classes_per_client": 2}), ("dirichlet", {"alpha": 0.5})]
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
    assert (description["num_clients"], description["num_examples"], description["num_left_out"]) == (3, 6, 0)
    assert [c["classes"] for c in description["clients"]] == [[0], [1], [2]]
    assert [c["examples"] for c in description["clients"]] == [2, 2, 2]


CLASSES_RANGE = r"classes_per_client must be an integer in \[1, 10\]"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 61}, r"num_clients \(61\) must be at most the number of examples \(60\)"),
        ({"scheme": "pathological"}, "partition must be one of"),
        ({"scheme": "label_skew"}, "classes_per_client is required for the label_skew partition"),
        ({"scheme": "label_skew_random"}, "classes_per_client is required for the label_skew_random partition"),
        ({"scheme": "label_skew", "classes_per_client": 11}, CLASSES_RANGE),
        ({"scheme": "label_skew", "classes_per_client": 2.0}, CLASSES_RANGE),
        ({"scheme": "label_skew_random", "classes_per_client": 0}, CLASSES_RANGE),
        (
            {"scheme": "label_skew", "classes_per_client": 2, "num_clients": 31},
            r"num_clients \* classes_per_client \(62\) must be at most the number of examples \(60\)",
        ),
        ({"scheme": "label_skew_random", "classes_per_client": 2, "num_clients": 4}, "at least the number of classes"),
        ({"scheme": "label_skew_random", "classes_per_client": 10, "num_clients": 60}, "examples per class"),
        ({"scheme": "dirichlet"}, "alpha is required"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha must be a finite number >= 0.001"),
        ({"scheme": "dirichlet", "alpha": 1e-30}, "alpha must be a finite number >= 0.001"),  # Hung NumPy.
        ({"scheme": "dirichlet", "alpha": float("inf")}, "alpha must be a finite number >= 0.001"),
    ],
)
def test_impossible_requests_name_the_argument(kwargs, match):
    args = {"num_clients": 10, "scheme": "iid", **kwargs}
    with pytest.raises(ValueError, match=match):
        partition(BALANCED, args.pop("num_clients"), args.pop("scheme"), **args)
