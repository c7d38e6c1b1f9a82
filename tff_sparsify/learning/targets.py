"""A sparsity schedule's targets (paper eq. 1) inside TFF computations, where the round is a tensor."""
from __future__ import annotations

import tensorflow as tf

from tff_sparsify.core import schedules


def target_sparsity(
    schedule: schedules.SparsitySchedule | schedules.OneShotSchedule, round_num: tf.Tensor
) -> tf.Tensor:
    """`schedule(round_num)` as a float64 tensor: 0 at round 0, and rounds after the last keep the
    last round's target."""
    table = [0.0] + [schedule(t) for t in range(1, schedule.total_rounds + 1)]
    return tf.gather(tf.constant(table, tf.float64), tf.minimum(round_num, len(table) - 1))
