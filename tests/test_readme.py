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


def test_own_model_and_data_example_trains_and_gives_a_sparse_keras_model(capsys, tmp_path, monkeypatch):
    section = README.read_text().split("### Your own model and data", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "total_rounds=20" in code and "range(1, 21)" in code, "the example changed; update this test"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code.replace("total_rounds=20", "total_rounds=3").replace("range(1, 21)", "range(1, 4)"),
                 str(README), "exec"), namespace)
    model = namespace["model"]
    loss, accuracy = (float(v) for v in capsys.readouterr().out.strip().strip("[]").split(","))
    assert np.isfinite(loss) and 0 <= accuracy <= 1
    assert not any("prune" in type(layer).__name__.lower() for layer in model.layers)  # Wrappers stripped.
    kernels = [model.layers[0].kernel.numpy(), model.layers[-1].kernel.numpy()]
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    assert abs(zeros - 0.5) < 0.01  # s_f = 0.5 reached at the last round, over both kernels.
    batch_norm = model.layers[1]
    assert not np.allclose(batch_norm.moving_mean.numpy(), 0)  # The clients' statistics, federated.
    assert (tmp_path / "my_sparse_cnn.keras").exists()
