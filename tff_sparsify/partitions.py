"""Split a labelled dataset among federated clients (FedSparsify paper, section 5 and appendix B).

Pure NumPy. Every partition returns one array of example indices per client; together they cover
the dataset exactly once (no overlap, nothing dropped). All are deterministic for a given seed.

- `iid`: a random equal split.
- `label_skew`: each client holds exactly `classes_per_client` distinct labels. As in the paper, the
  data is sorted by label and cut into `num_clients * classes_per_client` label-pure shards, and each
  client receives `classes_per_client` shards of distinct labels. Shards are cut within each class,
  so they stay label-pure even when class sizes differ.
- `dirichlet`: per class, client shares drawn from Dirichlet(alpha) (Hsu et al., 2019).
"""
from __future__ import annotations

import dataclasses

import numpy as np

PARTITIONS = ("iid", "label_skew", "dirichlet")


@dataclasses.dataclass(frozen=True)
class Partition:
    """Which examples each client holds, and a readable description of the split."""

    name: str
    client_indices: tuple[np.ndarray, ...]
    labels: np.ndarray
    num_classes: int

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    def examples_per_client(self) -> list[int]:
        return [len(indices) for indices in self.client_indices]

    def class_counts(self) -> np.ndarray:
        """Array [num_clients, num_classes]: examples of each class held by each client."""
        return np.stack(
            [np.bincount(self.labels[idx], minlength=self.num_classes) for idx in self.client_indices]
        )

    def classes_per_client(self) -> list[list[int]]:
        return [np.flatnonzero(row).tolist() for row in self.class_counts()]

    def describe(self) -> dict:
        """JSON-ready summary: examples and classes per client."""
        return {
            "partition": self.name,
            "num_clients": self.num_clients,
            "num_examples": int(sum(self.examples_per_client())),
            "clients": [
                {"client": i, "examples": n, "classes": classes}
                for i, (n, classes) in enumerate(
                    zip(self.examples_per_client(), self.classes_per_client())
                )
            ],
        }


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str = "iid",
    *,
    classes_per_client: int | None = None,
    alpha: float | None = None,
    num_classes: int | None = None,
    seed: int = 1990,
) -> Partition:
    """Partitions `labels` among `num_clients` with `scheme` (one of `PARTITIONS`)."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    _check_clients(num_clients, len(labels))
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        indices = _iid(len(labels), num_clients, rng)
    elif scheme == "label_skew":
        if classes_per_client is None:
            raise ValueError("classes_per_client is required for the label_skew partition")
        indices = _label_skew(labels, num_clients, classes_per_client, num_classes, rng)
    elif scheme == "dirichlet":
        if alpha is None:
            raise ValueError("alpha is required for the dirichlet partition")
        indices = _dirichlet(labels, num_clients, alpha, num_classes, rng)
    else:
        raise ValueError(f"partition must be one of {PARTITIONS}, got {scheme!r}")
    return Partition(scheme, tuple(np.sort(idx) for idx in indices), labels, num_classes)


def _check_clients(num_clients: int, num_examples: int) -> None:
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
    if num_clients > num_examples:
        raise ValueError(
            f"num_clients ({num_clients}) must be at most the number of examples ({num_examples})"
        )


def _iid(num_examples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random split into sizes that differ by at most one."""
    return np.array_split(rng.permutation(num_examples), num_clients)


def _label_skew(
    labels: np.ndarray,
    num_clients: int,
    classes_per_client: int,
    num_classes: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    present = np.flatnonzero(np.bincount(labels, minlength=num_classes))
    if not 1 <= classes_per_client <= len(present):
        raise ValueError(
            f"classes_per_client must be in [1, {len(present)}] (the number of classes present), "
            f"got {classes_per_client}"
        )
    num_shards = num_clients * classes_per_client
    if num_shards < len(present):
        raise ValueError(
            f"num_clients * classes_per_client ({num_shards}) must be at least the number of "
            f"classes ({len(present)}), otherwise some examples belong to no client"
        )
    # Shards per class: as equal as possible, the extra ones going to randomly chosen classes.
    shards_per_class = np.full(len(present), num_shards // len(present))
    shards_per_class[rng.permutation(len(present))[: num_shards % len(present)]] += 1
    class_sizes = np.bincount(labels, minlength=num_classes)[present]
    if np.any(class_sizes < shards_per_class):
        raise ValueError(
            f"label_skew needs at least {shards_per_class.max()} examples per class for "
            f"num_clients={num_clients} and classes_per_client={classes_per_client}"
        )
    client_classes = _assign_distinct_classes(shards_per_class, num_clients, classes_per_client, rng)
    client_indices: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for class_position, label in enumerate(present):
        holders = [c for c in range(num_clients) if class_position in client_classes[c]]
        shards = np.array_split(rng.permutation(np.flatnonzero(labels == label)), len(holders))
        for client, shard in zip(holders, shards):
            client_indices[client].append(shard)
    return [np.concatenate(parts) for parts in client_indices]


def _assign_distinct_classes(
    shards_per_class: np.ndarray, num_clients: int, classes_per_client: int, rng: np.random.Generator
) -> list[set[int]]:
    """Deals each client `classes_per_client` shards of distinct classes, at random.

    Invariant: no class has more shards left than clients left, which (with the total equal to
    clients * classes_per_client) guarantees a valid deal exists. A class with as many shards left as
    clients left must go to every remaining client, so it is taken first; the rest are drawn with
    probability proportional to the shards they have left.
    """
    remaining = shards_per_class.astype(np.int64).copy()
    assignment = []
    for clients_left in range(num_clients, 0, -1):
        forced = np.flatnonzero(remaining == clients_left)
        others = np.flatnonzero((remaining > 0) & (remaining < clients_left))
        picks = rng.choice(
            others,
            size=classes_per_client - len(forced),
            replace=False,
            p=remaining[others] / remaining[others].sum(),
        ) if len(forced) < classes_per_client else np.empty(0, np.int64)
        chosen = np.concatenate([forced, picks]).astype(np.int64)
        remaining[chosen] -= 1
        assignment.append(set(chosen.tolist()))
    order = rng.permutation(num_clients)
    return [assignment[i] for i in order]


def _dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    num_classes: int,
    rng: np.random.Generator,
    max_attempts: int = 1000,
) -> list[np.ndarray]:
    """Per class, shares ~ Dirichlet(alpha); redrawn until no client is empty."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    for _ in range(max_attempts):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for label in range(num_classes):
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for client, piece in enumerate(np.split(members, cuts)):
                parts[client].append(piece)
        indices = [np.concatenate(p) for p in parts]
        if min(len(idx) for idx in indices) > 0:
            return indices
    raise ValueError(
        f"could not give every one of {num_clients} clients an example with alpha={alpha} in "
        f"{max_attempts} draws; use a larger alpha or fewer clients"
    )
