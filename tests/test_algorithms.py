"""The algorithm registry: every algorithm is one module that the runner, grid, report and command line
find by name; the README's toy algorithm, added from outside the package, runs end to end."""
import dataclasses
import importlib
import json
import pathlib
import re
import sys

import numpy as np
import pytest
import tensorflow as tf

from tff_sparsify import algorithms, grid, models
from tff_sparsify.config import ExperimentConfig

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _built_in() -> list[str]:
    """The algorithms of the package's own modules (a test may register more)."""
    return [n for n in algorithms.names()
            if (algorithms.get(n).build_process.__module__ or "").startswith("tff_sparsify.algorithms.")]


def test_every_algorithm_module_cites_its_paper_and_the_paper_grid_is_registered():
    for name in _built_in():
        module = sys.modules[algorithms.get(name).build_process.__module__]
        assert re.search(r"(19|20)\d\d", module.__doc__), f"{module.__name__} cites no paper"
    assert set(grid.PAPER_ALGORITHMS) <= set(algorithms.names())


def test_facts_the_runner_reads_come_from_each_algorithm():
    dense = {n for n in _built_in() if not algorithms.get(n).prunes}
    assert dense == {"fedavg", "fedprox"}
    assert {n for n in _built_in() if algorithms.get(n).uploads_masks} == {"fedsparsify_local"}
    assert algorithms.option_owners()["quorum"] == ("fedsparsify_local",)
    assert set(algorithms.option_owners()["block_size"]) == {"fedsparsify_global", "fedsparsify_local"}


def test_options_live_with_their_algorithm_and_old_flat_configs_still_load():
    config = ExperimentConfig(algorithm="fedsparsify_local", options={"quorum": 0.6})
    assert config.options.quorum == 0.6 and config.options.final_sparsity == 0.8
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="quorum applies to fedsparsify_local only, got 0.6 with algorithm 'fedavg'"):
        ExperimentConfig.from_dict({"algorithm": "fedavg", "quorum": 0.6})
    with pytest.raises(ValueError, match="unknown config keys"):
        ExperimentConfig.from_dict({"quorom": 0.6})
    # A config.json of an older version held every algorithm's options; they are left out.
    old = {**config.to_dict(), "algorithm": "fedavg", "proximal_strength": 0.001, "readjust_every": 50}
    assert ExperimentConfig.from_saved(old) == ExperimentConfig(algorithm="fedavg")


def test_register_refuses_a_taken_or_malformed_name():
    fedavg = algorithms.get("fedavg")
    assert algorithms.register(fedavg) is fedavg  # The same algorithm again is harmless.
    with pytest.raises(ValueError, match="already registered"):
        algorithms.register(dataclasses.replace(fedavg, summary="another"))
    with pytest.raises(ValueError, match="lowercase"):
        algorithms.register(dataclasses.replace(fedavg, name="Fed-Avg"))


def _readme_toy_code() -> str:
    section = README.read_text().split("### Adding an algorithm", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def toy():
    """The README's toy algorithm, registered as the README does it (without its final run)."""
    code = _readme_toy_code()
    definition, run = code.split("\nconfig = ", 1)
    namespace = {}
    exec(compile(definition, str(README), "exec"), namespace)
    return namespace, "config = " + run


def test_readme_toy_algorithm_runs_end_to_end(toy, tmp_path, monkeypatch):
    namespace, run = toy
    assert "rounds=5" in run, "the example changed; update this test"
    monkeypatch.chdir(tmp_path)
    exec(compile(run.replace("rounds=5", "rounds=2, num_clients=3, local_epochs=1"), str(README), "exec"), namespace)
    summary = namespace["summary"]
    assert summary["completed"] and summary["rounds_completed"] == 2
    saved = json.loads((tmp_path / "runs" / "fedavg_clipped" / "config.json").read_text())
    assert saved["algorithm"] == "fedavg_clipped" and saved["clip"] == 0.05
    assert (tmp_path / "runs" / "fedavg_clipped" / "final_model.keras").exists()


def _one_round(algorithm, options, task, federated):
    """The global weights before and after one round of `algorithm` (1 epoch, learning rate 0.1)."""
    config = ExperimentConfig(algorithm=algorithm, options=options, num_clients=3, client_learning_rate=0.1)
    process = algorithms.get(algorithm).build_process(algorithms.Setup(config, task, federated), None)
    tf.keras.utils.set_random_seed(0)
    state = process.set_model_weights(process.initialize(), models.initial_model_weights(task.wrapped_keras_model()))
    before = process.get_model_weights(state).trainable
    state = process.next(state, federated.client_datasets(round_num=1)).state
    return [np.asarray(w) for w in before], [np.asarray(w) for w in process.get_model_weights(state).trainable]


def test_toy_hook_bounds_every_step_and_a_loose_bound_is_fedavg(toy, task, federated):
    # Each local step moves a weight by at most lr * clip, so one round moves the example-weighted mean
    # of the clients' models by at most lr * clip * (the most steps any client takes).
    steps = max(sum(1 for _ in federated.client_dataset(c)) for c in range(3))
    before, after = _one_round("fedavg_clipped", {"clip": 1e-3}, task, federated)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(after, before))
    assert 0 < moved <= 0.1 * 1e-3 * steps * (1 + 1e-5)
    loose = _one_round("fedavg_clipped", {"clip": 1e9}, task, federated)
    fedavg = _one_round("fedavg", None, task, federated)
    for got, expected in zip(loose[1], fedavg[1]):
        np.testing.assert_array_equal(got, expected)


def test_the_registry_loads_without_tensorflow():
    script = "import sys, tff_sparsify.algorithms as a, tff_sparsify.config; print(len(a.names()), 'tensorflow' in sys.modules)"
    import subprocess

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == [str(len(_built_in())), "False"]


def test_every_algorithm_module_is_registered():
    package = pathlib.Path(algorithms.__file__).parent
    for path in package.glob("[!_]*.py"):
        module = importlib.import_module(f"tff_sparsify.algorithms.{path.stem}")
        for algorithm in getattr(module, "ALGORITHMS", ()):
            assert algorithms.get(algorithm.name) is algorithm
