"""Nothing lost, nothing silently wrong: exact resume after a kill at any write, one run per folder,
non-finite client updates left out (and a run with no finite update stopped at its last checkpoint)."""
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import pytest
import tensorflow as tf

from tff_sparsify import experiment, files, learning
from tff_sparsify.core import schedules
from tff_sparsify.learning import worker_data
from tff_sparsify.algorithms import fedavg, fedsparsify_global, fedsparsify_local

from conftest import TINY_CONFIG

TINY = experiment.ExperimentConfig.from_dict(TINY_CONFIG)


class Killed(BaseException):
    """The process dies here (not an Exception: nothing may catch it)."""


def without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    summary = experiment.run(TINY, str(output_dir), progress=False)
    return json.loads((output_dir / "history.json").read_text()), summary


@pytest.mark.parametrize(
    "file_name,occurrence",
    [
        ("checkpoint.npz", 2),  # Round 2 committed, its history.json not yet written.
        ("history.json", 2),
        ("history.csv", 2),
        ("final_model.keras", 1),  # All rounds done; no plot, no summary yet.
        ("history.png", 1),
    ],
)
def test_a_kill_after_any_write_resumes_to_the_uninterrupted_run(
    uninterrupted, tmp_path, monkeypatch, file_name, occurrence
):
    real_write, seen = files.atomic_write, collections.Counter()

    def write_then_maybe_die(path, write, suffix=""):
        real_write(path, write, suffix)
        seen[os.path.basename(path)] += 1
        if os.path.basename(path) == file_name and seen[file_name] == occurrence:
            raise Killed

    monkeypatch.setattr(files, "atomic_write", write_then_maybe_die)
    with pytest.raises(Killed):
        experiment.run(TINY, str(tmp_path), progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "summary.json").exists()  # Not declared complete before everything exists.

    summary = experiment.run(TINY, str(tmp_path), progress=False)
    history, expected_summary = uninterrupted
    assert without_seconds(json.loads((tmp_path / "history.json").read_text())) == without_seconds(history)
    assert {k: v for k, v in summary.items() if k != "seconds"} == {
        k: v for k, v in expected_summary.items() if k != "seconds"
    }
    assert (tmp_path / "final_model.keras").exists() and (tmp_path / "history.png").exists()


def test_a_folder_in_use_is_refused_naming_it_and_the_other_process(tmp_path):
    with files.exclusive_lock(str(tmp_path)):
        with pytest.raises(files.DirectoryInUseError, match=rf"in use by another run \(process {os.getpid()}\)"):
            experiment.run(TINY, str(tmp_path), progress=False)
    assert sorted(os.listdir(tmp_path)) == [".lock"]  # The second run wrote nothing.


SCHEDULE = schedules.SparsitySchedule(final_sparsity=0.5, total_rounds=2)


@pytest.mark.parametrize(
    "build",
    [
        fedavg.build,
        lambda task: fedsparsify_global.build(task, SCHEDULE),
        lambda task: fedsparsify_local.build(task, SCHEDULE),
    ],
    ids=["fedavg", "fedsparsify_global", "fedsparsify_local"],
)
def test_a_non_finite_client_is_left_out_of_the_round(task, federated, build):
    process = build(task)
    state = process.initialize()
    good, other = federated.client_datasets([0, 1], round_num=1)
    poisoned = other.map(lambda batch: collections.OrderedDict(x=batch["x"] * np.nan, y=batch["y"]))
    with_poison = process.next(state, [poisoned, good])
    alone = process.next(state, [good])
    assert with_poison.metrics["client_work"]["nonfinite_clients"] == 1
    assert alone.metrics["client_work"]["nonfinite_clients"] == 0
    for mixed, clean in zip(tf.nest.flatten(process.get_model_weights(with_poison.state)),
                            tf.nest.flatten(process.get_model_weights(alone.state))):
        np.testing.assert_array_equal(mixed, clean)  # As if the poisoned client had not taken part.


def test_a_run_whose_every_client_diverges_stops_at_its_last_checkpoint(tmp_path):
    config = experiment.ExperimentConfig.from_dict({**TINY_CONFIG, "client_learning_rate": 1e6})
    with pytest.raises(experiment.NonFiniteError, match="round 1: the update of every client"):
        experiment.run(config, str(tmp_path), progress=False)
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "checkpoint.npz").exists()
    # The advice works in the same folder: no round was done, so the folder holds no run yet.
    assert experiment.run(TINY, str(tmp_path), progress=False, stop_after=1)["rounds_completed"] == 1


def test_history_with_a_non_finite_value_stays_valid_json(tmp_path):
    with pytest.raises(ValueError):
        files.write_json(str(tmp_path / "x.json"), {"loss": float("nan")})
    row = experiment._finite_or_none(float("inf")), experiment._finite_or_none(np.float32(0.5))
    assert row == (None, 0.5)


def test_result_files_are_readable_like_any_file_the_user_creates(tmp_path):
    files.write_json(str(tmp_path / "a.json"), {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == 0o666 & ~umask  # Not mkstemp's 0o600.


def test_a_folder_in_use_is_refused_before_the_data_loads(tmp_path, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the data loaded although the folder is in use")

    monkeypatch.setattr(experiment.data, "load_dataset", must_not_load)
    with files.exclusive_lock(str(tmp_path)):
        with pytest.raises(files.DirectoryInUseError):
            experiment.run(TINY, str(tmp_path), progress=False)


def test_a_refused_run_leaves_no_folder_and_an_existing_folder_keeps_its_files(tmp_path):
    config = experiment.ExperimentConfig.from_dict({**TINY_CONFIG, "model": "vgg16"})  # Does not fit 8x8 digits.
    with pytest.raises(ValueError, match="does not fit"):
        experiment.run(config, str(tmp_path / "new"), progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="does not fit"):
        experiment.run(config, str(tmp_path / "old"), progress=False)
    assert sorted(os.listdir(tmp_path / "old")) == [".lock", "notes.txt"]


def test_a_refused_compare_leaves_none_of_the_folders_it_made(tmp_path):
    output = tmp_path / "made" / "for" / "compare"  # As `compare` makes runs/compare/<algorithm>.
    with files.exclusive_lock(str(output / "fedavg")):
        assert (output / "fedavg" / ".lock").exists()
    assert os.listdir(tmp_path) == []
    (tmp_path / "made").mkdir()
    (tmp_path / "made" / "notes.txt").write_text("mine")
    with files.exclusive_lock(str(output / "fedavg")):
        pass
    assert sorted(os.listdir(tmp_path / "made")) == ["notes.txt"]  # Only what the lock made is gone.


def test_what_a_killed_process_left_is_removed_but_a_live_ones_files_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    prefix, owner_file = worker_data.WorkerClientData.PREFIX, worker_data.WorkerClientData.OWNER_FILE
    orphan, live, other = (tmp_path / f"{prefix}{name}" for name in ("dead", "live", "older_version"))
    for directory in (orphan, live, other):
        directory.mkdir()
    (orphan / owner_file).write_text("")  # Its owner was killed: nobody holds the lock.
    held = worker_data._own(str(live), owner_file)  # A live owner (here: this process).
    try:
        worker_data._remove_orphaned_directories(prefix, owner_file)
        assert not orphan.exists() and live.exists() and other.exists()
    finally:
        os.close(held)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in (".tmp-abc.png", ".tmp-def.npz", "notes.txt"):
        (run_dir / name).write_text("x")
    (run_dir / ".tmp-ghi").mkdir()  # An export directory killed mid-write.
    files.remove_temporaries(str(run_dir))
    assert os.listdir(run_dir) == ["notes.txt"]


def test_sigterm_stops_a_run_with_one_line_cleans_up_and_the_run_resumes(tmp_path):
    """`tff-sparsify run` stopped by SIGTERM (a scheduler's kill, `timeout`) exits 143 with one line,
    leaves no worker, client files or temporaries, and the same command resumes; a stray `.tmp-`
    file (as a SIGKILL mid-write leaves) is removed by the resumed run."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tff_sparsify.cli", "run", "--quiet", "--rounds", "30", "--local-epochs", "1",
               "--num-clients", "3", "--output-dir", str(run_dir)]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "history.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        workers = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == (
        "tff-sparsify: stopped by SIGTERM; run the same command again to resume after the last completed round")
    psutil.wait_procs(workers, timeout=10)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert not list(tmp_path.glob("tff_sparsify_clients_*")) and not list(run_dir.glob(".tmp-*"))
    done = len(json.loads((run_dir / "history.json").read_text()))
    (run_dir / ".tmp-killed.png").write_text("x")
    resumed = subprocess.run([*command, "--stop-after", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(json.loads((run_dir / "history.json").read_text())) == done + 1
    assert not list(run_dir.glob(".tmp-*"))


SWALLOWED_STOP = """
import gc, os, signal, sys, time
from tff_sparsify import cli

def collecting(phase, info):  # Like TensorFlow's gc callback: a signal's exception here is swallowed.
    if phase == "start" and not fired:
        fired.append(True)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(200):
            time.sleep(0.001)  # The handler runs in here.

def command(args):
    gc.callbacks.append(collecting)
    gc.collect()
    time.sleep(10)
    print("finished although interrupted")

fired = []
cli.COMMANDS["run"] = command
sys.exit(cli.main(["run"]))
"""


def test_ctrl_c_that_lands_in_a_gc_callback_still_stops_the_command():
    result = subprocess.run([sys.executable, "-c", SWALLOWED_STOP], capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "finished" not in result.stdout
    assert result.returncode == 130
    assert result.stderr.strip().splitlines() == [
        "tff-sparsify: interrupted; run the same command again to resume after the last completed round"]



def test_a_refused_lock_removes_nothing_of_the_holders(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    with files.exclusive_lock(str(folder)):
        with monkeypatch.context() as patched:  # As if the second process had seen no folder yet.
            patched.setattr(files.os.path, "exists", lambda path: False)
            with pytest.raises(files.DirectoryInUseError):
                with files.exclusive_lock(str(folder)):
                    pass
        assert (folder / ".lock").exists()
    assert not folder.exists()  # The holder created it and left nothing: removed at its release.


SECOND_SIGNAL_DURING_CLEANUP = """
import os, signal, sys, time
from tff_sparsify import cli

def command(args):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # Another stop while cleaning up.
        time.sleep(0.2)
        print("cleanup done", flush=True)

cli.COMMANDS["run"] = command
sys.exit(cli.main(["run"]))
"""


def test_a_second_stop_does_not_interrupt_the_cleanup_of_the_first():
    result = subprocess.run([sys.executable, "-c", SECOND_SIGNAL_DURING_CLEANUP], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "cleanup done"
    assert result.returncode == 128 + signal.SIGTERM
