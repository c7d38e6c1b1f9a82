"""Rounds across several TFF workers (`tff_sparsify.distributed`). The workers of these tests run in
a private network namespace (`unshare -rn`, loopback only: a worker listens on every interface
without authentication), with the driver, in a subprocess; tests skip when the namespace cannot be
made. Tolerance: two or three workers sum the clients' updates in another order than one process, so
float32 results may differ in their last bits: 1e-6 on weights, losses and accuracies (measured:
about 1.5e-8 per round)."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tff_sparsify import checks, cli
from tff_sparsify.config import ExperimentConfig

SCENARIOS = pathlib.Path(__file__).with_name("distributed_scenarios.py")
TOLERANCE = 1e-6


def _private_network_available() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True).returncode == 0


private_network = pytest.mark.skipif(not _private_network_available(),
                                     reason="needs `unshare -rn` and `ip` (a private network namespace)")


def _scenario(name: str, tmp_path) -> dict:
    script = f"ip link set lo up && exec {sys.executable} {SCENARIOS} {name} {tmp_path}"
    environment = {**os.environ, "PYTHONPATH": str(SCENARIOS.parents[1]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, env=environment,
                          timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read()
    except FileNotFoundError:
        return False


@private_network
def test_two_and_three_workers_give_the_single_process_history(tmp_path):
    results = _scenario("same_history", tmp_path)
    assert set(results) == {"fedsparsify_global_2", "fedsparsify_global_3", "fedsparsify_local_2",
                            "fedsparsify_local_3"}
    for name, difference in results.items():
        assert difference["rounds"] == 2, name
        assert difference["history"] <= TOLERANCE and difference["weights"] <= TOLERANCE, (name, difference)
        assert difference["communication_equal"], name


@private_network
def test_a_worker_that_dies_fails_the_round_naming_it_and_the_run_resumes(tmp_path):
    results = _scenario("worker_dies", tmp_path)
    assert results["error"] is not None and results["victim"] in results["error"]
    assert "round_timeout = 20 s" in results["error"] and "unreachable" in results["error"]
    assert results["rounds_after_failure"] == 1  # The checkpoint of round 1 is intact.
    assert results["resumed_rounds"] == 3 and results["completed"]
    assert not any(_alive(pid) for pid in results["pids"])


@private_network
def test_a_worker_restarted_at_its_address_between_rounds_is_used_again(tmp_path):
    results = _scenario("worker_restarts", tmp_path)
    assert results["restarted"] and results["completed"] and results["rounds"] == 3
    assert results["history"] <= TOLERANCE and results["weights"] <= TOLERANCE, results
    assert results["communication_equal"]


@private_network
def test_a_worker_that_cannot_read_the_clients_files_is_named(tmp_path):
    results = _scenario("unreadable_data", tmp_path)
    assert results["error"].startswith(f"TFF worker {results['worker']} cannot read /nonexistent/client_1.tensor")
    assert "same path" in results["error"]


@pytest.mark.parametrize("value", ["local:0", "host", "host:99999", "a:1,a:1", ""])
def test_a_workers_value_that_does_not_parse_is_refused_naming_the_flag(value):
    with pytest.raises(ValueError, match="workers"):
        ExperimentConfig(workers=value)
    assert checks.workers("workers", "local:3") == 3
    assert checks.workers("workers", "a:1, [::1]:2") == ["a:1", "[::1]:2"]


def test_a_worker_address_where_nothing_listens_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from tff_sparsify import distributed

    monkeypatch.setattr(distributed, "READY_TIMEOUT", 1.0)
    with pytest.raises(SystemExit):
        cli.main(["run", "--workers", "localhost:9", "--output-dir", str(tmp_path / "run"), "--quiet"])
    assert "no TFF worker answers at localhost:9 (waited 1 s)" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_round_with_dependent_aggregations_is_refused_naming_the_algorithm():
    import numpy as np
    import tensorflow_federated as tff

    from tff_sparsify import distributed

    add = tff.tensorflow.computation(lambda a, b: a + b, np.float32, np.float32)

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def sum_of_shifted(values):  # The second sum needs the first one at every client.
        total = tff.federated_broadcast(tff.federated_sum(values))
        return tff.federated_sum(tff.federated_map(add, (values, total)))

    with pytest.raises(ValueError, match="algorithm 'two_sums' cannot run across workers"):
        distributed.check_splittable(sum_of_shifted, "two_sums")


@private_network
def test_the_worker_command_says_where_it_listens_and_stops_on_sigterm(tmp_path):
    import signal
    import time

    environment = {**os.environ, "PYTHONPATH": str(SCENARIOS.parents[1]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = f"ip link set lo up && exec {sys.executable} -m tff_sparsify.cli worker --port 47123"
    worker = subprocess.Popen(["unshare", "-rn", "sh", "-c", command], stdout=subprocess.PIPE, text=True,
                              env=environment)
    try:
        first = worker.stdout.readline()
        assert "listening on [::]:47123" in first and "without TLS or authentication" in first
        binary = int(first.split("(pid ")[1].split(")")[0])
        assert _alive(binary)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0 and "stopped" in worker.stdout.read()
        time.sleep(0.5)
        assert not _alive(binary)
    finally:
        if worker.poll() is None:
            worker.kill()
