"""The schedule's targets as TF lookups, as the client work and the finalizers use them."""
import pytest
import tensorflow as tf

from tff_sparsify.core import schedules
from tff_sparsify.learning import targets


def test_lookup_gives_the_schedule_with_zero_before_the_first_round_and_the_last_target_after_it():
    schedule = schedules.SparsitySchedule(final_sparsity=0.9, total_rounds=4, exponent=1.0)
    looked_up = [float(targets.target_sparsity(schedule, tf.constant(t))) for t in range(7)]
    # Eq. 1 with e = 1, t0 = 1, T = 4: s(t) = 0.9 (t - 1) / 3.
    assert looked_up == pytest.approx([0.0, 0.0, 0.3, 0.6, 0.9, 0.9, 0.9])


def test_lookup_works_inside_a_graph_for_one_shot_schedules():
    schedule = schedules.OneShotSchedule(final_sparsity=0.8, total_rounds=3, prune_round=2)
    lookup = tf.function(lambda t: targets.target_sparsity(schedule, t))
    assert [float(lookup(tf.constant(t))) for t in range(5)] == [0.0, 0.0, 0.8, 0.8, 0.8]
    assert lookup(tf.constant(1)).dtype == tf.float64
