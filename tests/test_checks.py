"""The shared argument checks: one wording, exact bounds."""
import re

import numpy as np
import pytest

from tff_sparsify import checks


def test_integer_accepts_integers_in_range_and_names_the_argument_otherwise():
    assert checks.integer("rounds", np.int64(3)) == 3 and checks.integer("n", 0, 0) == 0
    for value, minimum, maximum, bound in [(0, 1, None, ">= 1"), (True, 0, None, ">= 0"), (2.0, 1, None, ">= 1"),
                                           (5, 1, 4, "in [1, 4]"), ("3", 1, None, ">= 1")]:
        with pytest.raises(ValueError, match="^" + re.escape(f"rounds must be an integer {bound}, got {value!r}") + "$"):
            checks.integer("rounds", value, minimum, maximum)


def test_fraction_is_half_open():
    assert checks.fraction("sparsity", 0) == 0.0 and checks.fraction("sparsity", np.float32(0.99)) < 1
    for value in (1.0, -0.01, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match=r"^sparsity must be in \[0, 1\), got "):
            checks.fraction("sparsity", value)


def test_choice_lists_the_allowed_values():
    checks.choice("runtime", "tf", ("tf", "litert"))
    with pytest.raises(ValueError, match=r"^runtime must be one of \('tf', 'litert'\), got 'tflite'$"):
        checks.choice("runtime", "tflite", ("tf", "litert"))


def test_file_names_a_directory_and_a_missing_path(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"")
    checks.file("TFLITE", str(tmp_path / "model.tflite"), ".tflite file")
    with pytest.raises(IsADirectoryError, match=r": a directory, not a \.tflite file$"):
        checks.file("TFLITE", str(tmp_path), ".tflite file")
    with pytest.raises(FileNotFoundError, match=r"^TFLITE '.*gone': no such file$"):
        checks.file("TFLITE", str(tmp_path / "gone"), ".tflite file")
