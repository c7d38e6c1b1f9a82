"""Export and results-table commands on a finished tiny run."""
import json
import os
import shutil

import pytest

from tff_sparsify import cli, config, plots, report


@pytest.fixture(scope="module")
def table(resumed_run, tmp_path_factory):
    run_dir, *_ = resumed_run
    output_dir = str(tmp_path_factory.mktemp("table"))
    return run_dir, output_dir, report.write_table([run_dir, run_dir], output_dir, repeats=5)


def test_table_rows_hold_the_runs_figures(resumed_run, table):
    run_dir, _, rows = table
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    row = rows[0]
    assert row["accuracy"] == summary["mean_test_accuracy_last_10"]
    assert row["params"] == summary["final_nonzero_params"]
    assert row["comm_params"] == summary["communication"]["params"]
    assert row["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert 0 < row["gzip_mb"] < row["tflite_mb"] * 1.1 and row["latency_ms"] > 0
    assert row["batch_size"] == 32 and row["threads"] == 1
    # The same run twice: every size and cost factor relative to the first row is 1.
    for column in ("params_x", "comm_params_x", "gzip_mb_x"):
        assert rows[1][column] == pytest.approx(1.0)


def test_table_files_and_plots_are_written(table):
    run_dir, output_dir, _ = table
    assert {"table.md", "table.csv", "table.json", "comparison.png"} <= set(os.listdir(output_dir))
    with open(os.path.join(output_dir, "table.md")) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("| run | sparsity") and sum(line.startswith("| ") for line in lines) == 4
    with open(os.path.join(run_dir, "export", "export.json")) as f:
        exported = json.load(f)
    assert exported["parity"]["tf"]["agreement"] == 1.0 and exported["parity"]["litert"]["agreement"] == 1.0


def test_export_and_bench_commands(resumed_run, tmp_path, capsys):
    run_dir, *_ = resumed_run
    assert cli.main(["export", run_dir, "--output-dir", str(tmp_path / "int8"), "--quantize", "dynamic_int8"]) == 0
    assert os.path.exists(tmp_path / "int8" / "model.tflite")
    # LiteRT's XNNPACK cannot prepare the sparse int8 encoding: the dense one is written.
    assert f"exported to {tmp_path / 'int8'} (dense encoding: the sparse encoding is not runnable: litert cannot" \
        in capsys.readouterr().out
    path = str(tmp_path / "int8" / "model.tflite")
    assert cli.main(["bench", path, "--repeats", "3", "--batch-size", "4", "--runtime", "litert"]) == 0
    line = capsys.readouterr().out
    assert "items/s" in line and line.endswith("(1 thread(s), litert: XNNPACK)\n")


def test_unfinished_run_is_refused(resumed_run, tmp_path):
    run_dir, *_ = resumed_run
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    os.makedirs(tmp_path / "partial")
    with open(tmp_path / "partial" / "summary.json", "w") as f:
        json.dump({**summary, "completed": False, "rounds_completed": 1}, f)
    with pytest.raises(ValueError, match=r"holds no finished run \(1 rounds done\); run or resume it with"):
        report.run_row(str(tmp_path / "partial"))


def test_a_table_checks_every_run_before_exporting_any(resumed_run, tmp_path):
    """A finished run listed before an unfinished one is not exported (a table fails before work)."""
    run_dir, *_ = resumed_run
    finished = tmp_path / "finished"
    finished.mkdir()
    for name in ("summary.json", "history.json", "config.json", "final_model.keras"):
        shutil.copy(os.path.join(run_dir, name), finished)
    (tmp_path / "partial").mkdir()
    with pytest.raises(ValueError, match="'.*partial' holds no finished run; run or resume it"):
        report.write_table([str(finished), str(tmp_path / "partial")], str(tmp_path / "table"))
    with pytest.raises(ValueError, match="no such directory"):
        report.write_table([str(finished), str(tmp_path / "gone")], str(tmp_path / "table"))
    (finished / "final_model.keras").unlink()
    with pytest.raises(ValueError, match="finished run without its final_model.keras"):
        report.write_table([str(finished)], str(tmp_path / "table"))
    assert sorted(os.listdir(finished)) == ["config.json", "history.json", "summary.json"]
    assert not (tmp_path / "table").exists()


def test_accuracy_is_labelled_with_the_rounds_it_averages(table):
    _, output_dir, rows = table
    rounds = rows[0]["rounds"]
    assert rounds < 10
    with open(os.path.join(output_dir, "table.md")) as f:
        text = f.read()
    assert f"accuracy (last {rounds} / final)" in text and f"mean test accuracy of the last {rounds} rounds" in text
    assert [config.last_rounds_label(n) for n in ([200, 200], [2], [2, 200])] == ["10", "2", "2-10"]


def test_a_recalibrated_runs_final_accuracy_follows_in_brackets(table):
    _, _, rows = table
    assert rows[0]["recalibrated_accuracy"] is None  # The tiny run did not recalibrate.
    plain = report.markdown(rows)
    recalibrated = report.markdown([{**rows[0], "recalibrated_accuracy": 0.91234}, rows[1]])
    final = f"{rows[0]['accuracy']:.4f} / {rows[0]['final_accuracy']:.4f}"
    assert f"{final} |" in plain and "in brackets" not in plain
    assert f"{final} (0.9123) |" in recalibrated and "in brackets: the final model with the BatchNorm" in recalibrated


def test_close_sparsities_share_one_tick_with_the_shortest_label():
    assert plots.sparsity_ticks([0.9479, 0.95, 0.9879, 0.99, 0.9903]) == [0.95, 0.99]
    assert plots.sparsity_ticks([0.8, 0.9, 0.95, 0.99]) == [0.8, 0.9, 0.95, 0.99]


def test_labels_spread_just_enough_to_keep_their_gap():
    assert plots.spread([0.1, 0.849, 0.854, 0.9], 0.03) == pytest.approx([0.1, 0.849, 0.879, 0.909])
