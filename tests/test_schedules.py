import dataclasses
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tff_sparsify.core.schedules import SparsitySchedule

PAPER = SparsitySchedule(final_sparsity=0.8, total_rounds=200)  # t0 = 1, e = 3, f = 1.


def eq1(t_prime, s_0, s_f, t0, total, e=3.0):
    return s_f + (s_0 - s_f) * (1 - (t_prime - t0) / (total - t0)) ** e


@pytest.mark.parametrize("t,expected", [(2, 0.0120), (10, 0.1037), (50, 0.4574), (100, 0.6985)])
def test_paper_golden_values(t, expected):
    assert round(PAPER(t), 4) == expected


def test_first_round_is_initial_and_last_round_is_exactly_final():
    assert PAPER(1) == 0.0
    assert PAPER(200) == 0.8


def test_frequency_makes_flat_steps_between_multiples():
    schedule = SparsitySchedule(0.8, 200, frequency=5)
    assert [schedule(t) for t in (1, 2, 3, 4)] == [0.0] * 4  # t' = 0 < t0: clamped to s_0.
    assert schedule(5) == pytest.approx(eq1(5, 0.0, 0.8, 1, 200))
    assert schedule(5) == schedule(7) == schedule(9) < schedule(10)
    assert schedule(10) == PAPER(10)


def test_last_round_is_final_even_when_frequency_does_not_divide_it():
    schedule = SparsitySchedule(0.8, 203, frequency=10)
    assert schedule(200) == schedule(202) < 0.8
    assert schedule(203) == 0.8


def test_nothing_is_pruned_before_the_start_round():
    schedule = SparsitySchedule(0.5, 100, start_round=21)
    assert [schedule(t) for t in range(1, 22)] == [0.0] * 21
    assert schedule(60) == pytest.approx(eq1(60, 0.0, 0.5, 21, 100))


def test_initial_sparsity_is_reached_at_the_start_round():
    schedule = SparsitySchedule(0.9, 50, initial_sparsity=0.3, start_round=11)
    assert schedule(10) == 0.0
    assert schedule(11) == 0.3
    assert schedule(30) == pytest.approx(eq1(30, 0.3, 0.9, 11, 50))
    assert schedule(50) == 0.9


@pytest.mark.parametrize(
    "schedule",
    [
        PAPER,
        SparsitySchedule(0.9, 100, frequency=7, exponent=1.0),
        SparsitySchedule(0.5, 23, initial_sparsity=0.2, start_round=3, frequency=5),
        SparsitySchedule(0.95, 2),
    ],
)
def test_monotone_and_within_bounds(schedule):
    values = [schedule(t) for t in range(1, schedule.total_rounds + 1)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert all(0.0 <= v <= schedule.final_sparsity for v in values)
    assert values[-1] == schedule.final_sparsity


def test_to_dict_round_trips_through_json():
    schedule = SparsitySchedule(0.9, np.int64(100), initial_sparsity=0.1, start_round=5, frequency=2)
    config = json.loads(json.dumps(schedule.to_dict()))
    assert config == {
        "final_sparsity": 0.9, "total_rounds": 100, "initial_sparsity": 0.1,
        "start_round": 5, "frequency": 2, "exponent": 3.0,
    }
    assert SparsitySchedule.from_dict(config) == schedule


def test_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAPER.final_sparsity = 0.5


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(final_sparsity=1.0), r"final_sparsity must be in \[0, 1\)"),
        (dict(final_sparsity=-0.1), "final_sparsity"),
        (dict(final_sparsity=float("nan")), "final_sparsity"),
        (dict(initial_sparsity=0.9), r"initial_sparsity must be in \[0, final_sparsity\]"),
        (dict(initial_sparsity=-0.1), "initial_sparsity"),
        (dict(total_rounds=1), "total_rounds must be an integer >= 2"),
        (dict(total_rounds=10.0), "total_rounds"),
        (dict(start_round=0), r"start_round must be an integer in \[1, 199\]"),
        (dict(start_round=200), "start_round.*must start before the last round"),
        (dict(start_round=250), "start_round.*must start before the last round"),
        (dict(start_round=True), "start_round"),
        (dict(frequency=0), "frequency must be an integer >= 1"),
        (dict(frequency=1.5), "frequency"),
        (dict(exponent=0.0), "exponent must be a finite number > 0"),
        (dict(exponent=-1.0), "exponent"),
        (dict(exponent=float("inf")), "exponent"),
    ],
)
def test_invalid_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparsitySchedule(**{"final_sparsity": 0.8, "total_rounds": 200, **kwargs})


@pytest.mark.parametrize("round_num", [0, 201, 1.5])
def test_round_outside_the_schedule_is_an_error(round_num):
    with pytest.raises(ValueError, match=r"round_num must be an integer in \[1, 200\]"):
        PAPER(round_num)


def test_module_does_not_import_tensorflow():
    path = pathlib.Path(__file__).resolve().parents[1] / "tff_sparsify" / "core" / "schedules.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('schedules', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['schedules'] = module\n"
        "spec.loader.exec_module(module)\n"
        "assert module.SparsitySchedule(0.8, 200)(200) == 0.8\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
