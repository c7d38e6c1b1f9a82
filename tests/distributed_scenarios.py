"""Runs inside a private network namespace (`unshare -rn`, loopback only) for tests/test_distributed.py:
TFF workers started here are unreachable from any other machine. Prints one JSON line of results.

    python distributed_scenarios.py same_history|worker_dies|worker_restarts|unreadable_data OUTPUT_DIR
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np

from tff_sparsify import compat, distributed, experiment
from tff_sparsify.config import ExperimentConfig

TINY = dict(num_clients=4, rounds=2, local_epochs=1, final_sparsity=0.8)


def _final_weights(run_dir):
    with np.load(os.path.join(run_dir, "checkpoint.npz")) as saved:
        return [saved[k] for k in saved.files if k != "history"]


def _difference(a, b):
    history_a, history_b = (json.load(open(os.path.join(d, "history.json"))) for d in (a, b))
    keys = ("train_loss", "test_loss", "test_accuracy", "sparsity", "nonzero_params")
    rows = max(abs(ra[k] - rb[k]) for ra, rb in zip(history_a, history_b) for k in keys)
    weights = max(float(np.max(np.abs(x.astype(np.float64) - y))) for x, y in zip(_final_weights(a), _final_weights(b)))
    same_counts = all(ra["communication"] == rb["communication"] for ra, rb in zip(history_a, history_b))
    return {"history": rows, "weights": weights, "communication_equal": same_counts, "rounds": len(history_b)}


def same_history(output_dir):
    results = {}
    for algorithm, worker_counts in (("fedsparsify_global", (2, 3)), ("fedsparsify_local", (2, 3))):
        single = os.path.join(output_dir, f"{algorithm}_single")
        experiment.run(ExperimentConfig.from_dict(dict(algorithm=algorithm, **TINY)), single, progress=False)
        for count in worker_counts:
            spread = os.path.join(output_dir, f"{algorithm}_{count}")
            config = ExperimentConfig.from_dict(dict(algorithm=algorithm, workers=f"local:{count}", **TINY))
            experiment.run(config, spread, progress=False)
            results[f"{algorithm}_{count}"] = _difference(single, spread)
    return results


def worker_dies(output_dir):
    """Two workers started here; one is killed after round 1; round 2 must fail naming it, within the
    round timeout; the same run then resumes (on new workers) from its checkpoint."""
    run_dir = os.path.join(output_dir, "run")
    fields = dict(algorithm="fedsparsify_global", round_timeout=20.0, **{**TINY, "rounds": 3})
    workers = distributed.LocalWorkers(2)
    victim = workers.processes[1]

    def kill_after_first(row):
        if row["round"] == 1:
            os.kill(victim.pid, signal.SIGKILL)

    error = None
    try:
        config = ExperimentConfig.from_dict(dict(fields, workers=",".join(workers.addresses)))
        experiment.run(config, run_dir, progress=False, on_round=kill_after_first)
    except distributed.WorkerFailure as failure:
        error = str(failure)
    finally:
        workers.close()
    rounds_after_failure = len(json.load(open(os.path.join(run_dir, "history.json"))))
    resumed = experiment.run(ExperimentConfig.from_dict(dict(fields, workers="local:2")), run_dir, progress=False)
    return {"error": error, "victim": workers.addresses[1], "rounds_after_failure": rounds_after_failure,
            "resumed_rounds": resumed["rounds_completed"], "completed": resumed["completed"],
            "pids": workers.pids}


def worker_restarts(output_dir):
    """One of two workers is killed after round 1 and a new one started at its address before round
    2: the run goes on with it and ends as the single-process run does."""
    fields = dict(algorithm="fedsparsify_global", round_timeout=60.0, **{**TINY, "rounds": 3})
    single = os.path.join(output_dir, "single")
    experiment.run(ExperimentConfig.from_dict(fields), single, progress=False)
    workers = distributed.LocalWorkers(2)
    victim, port = workers.processes[1], int(workers.addresses[1].rsplit(":", 1)[1])

    def restart_after_first(row):
        if row["round"] == 1:
            victim.kill()
            victim.wait()
            workers.processes[1] = compat.worker_process(distributed.worker_command(port, 1),
                                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            distributed.wait_ready([workers.addresses[1]])

    spread = os.path.join(output_dir, "spread")
    try:
        config = ExperimentConfig.from_dict(dict(fields, workers=",".join(workers.addresses)))
        summary = experiment.run(config, spread, progress=False, on_round=restart_after_first)
    finally:
        workers.close()
    return {**_difference(single, spread), "completed": summary["completed"], "restarted": workers.pids[1] != victim.pid}


def unreadable_data(output_dir):
    """A client data path the worker cannot read is named, with the worker, before any round."""
    readable = os.path.join(output_dir, "client_0.tensor")
    open(readable, "w").close()
    with distributed.Cluster("local:1") as cluster:
        cluster.check_readable([readable])
        try:
            cluster.check_readable([readable, "/nonexistent/client_1.tensor"])
        except distributed.WorkerFailure as failure:
            return {"error": str(failure), "worker": cluster.addresses[0]}
    return {"error": None}


if __name__ == "__main__":
    scenario, output = sys.argv[1], sys.argv[2]
    scenarios = {"same_history": same_history, "worker_dies": worker_dies, "worker_restarts": worker_restarts,
                 "unreadable_data": unreadable_data}
    print("RESULT " + json.dumps(scenarios[scenario](output)))
