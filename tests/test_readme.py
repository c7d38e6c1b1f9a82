"""The README's Python API example runs (shortened to 2 rounds) and does what it says."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_trains_a_sparse_model(capsys):
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "total_rounds=30" in code and "range(1, 31)" in code, "the example changed; update this test"
    shortened = code.replace("total_rounds=30", "total_rounds=2").replace("range(1, 31)", "range(1, 3)")
    namespace = {}
    exec(compile(shortened, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["1", "2"]
    kernels = namespace["task"].layout.kernels(namespace["sparse_weights"].trainable)
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    assert abs(zeros - 0.8) < 1e-3  # s_f = 0.8 reached at the last round.
