"""The paper's experiment grid: cells, hyperparameters, selection, and a run-then-summary round trip."""
import os

import pytest

from tff_sparsify import cli, grid


def test_grid_has_every_cell_of_the_paper():
    cells = {name: fields for name, fields in grid.paper_grid().items() if not name.startswith("fedtiny_")}
    # 3 environments x 2 federations x 2 distributions x (2 dense + 8 pruning algorithms x 5 sparsities).
    assert len(cells) == 3 * 2 * 2 * (2 + 8 * 5) == 504
    groups = sorted({name.split("/")[0] for name in cells})
    assert groups == sorted(
        f"{env}_{dist}{suffix}"
        for env, skew in (("fashion_mnist", 2), ("cifar10", 5), ("cifar100", 50))
        for dist in ("iid", f"noniid{skew}")
        for suffix in ("", "_100clients")
    )
    runs = {name.split("/")[1] for name in cells if name.startswith("cifar10_iid/")}
    assert {"fedavg", "fedprox", "global_0.85", "local_0.99", "oneshot_finetune_0.8", "prunefl_0.95"} <= runs
    assert len(runs) == 42


def test_fedtiny_cells_compare_its_ablations_and_baselines_on_one_partition():
    cells = grid.fedtiny_grid({"fashion_mnist": "f.npz"})
    assert set(cells) <= set(grid.paper_grid({"fashion_mnist": "f.npz"}))
    assert len(cells) == 6 + 12 + 6  # CIFAR-10 at d = 0.01; FashionMNIST Dirichlet at 0.01, 0.05; non-IID at 0.01.
    chosen = grid.select(cells, ["fedtiny_fashion_mnist_dirichlet/*_0.99"])
    assert sorted(n.split("/")[1] for n in chosen) == [
        "fedtiny_0.99", "fedtiny_noabns_0.99", "fedtiny_static_0.99", "global_0.99", "prunefl_0.99", "snip_0.99"]
    partitions = {(c.partition, c.alpha, c.seed, c.server_examples, c.train_examples_per_class, c.data_path)
                  for c in chosen.values()}
    assert partitions == {("dirichlet", 0.5, 1990, 5, 1000, "f.npz")}
    group = "fedtiny_fashion_mnist_dirichlet"
    assert chosen[f"{group}/fedtiny_noabns_0.99"].options.adaptive_bn is False
    assert chosen[f"{group}/fedtiny_static_0.99"].options.progressive is False
    assert chosen[f"{group}/fedtiny_0.99"].options.adjust_every == chosen[f"{group}/prunefl_0.99"].options.readjust_every == 3
    preset = grid.select(cells, ["fedtiny_cifar10_resnet18/fedtiny_0.99"])["fedtiny_cifar10_resnet18/fedtiny_0.99"]
    assert (preset.dataset, preset.model, preset.rounds, preset.options.final_sparsity) == ("cifar10", "resnet18", 100, 0.99)


def test_cells_carry_the_papers_hyperparameters():
    cells = grid.select(grid.paper_grid(), ["*"])
    vgg = cells["cifar100_noniid50_100clients/global_0.9"]
    assert (vgg.dataset, vgg.rounds, vgg.batch_size, vgg.local_epochs) == ("cifar100", 100, 128, 4)
    assert (vgg.client_learning_rate, vgg.client_momentum, vgg.client_nesterov) == (0.01, 0.9, True)
    assert (vgg.partition, vgg.classes_per_client, vgg.num_clients, vgg.clients_per_round) == ("label_skew", 50, 100, 10)
    assert (vgg.algorithm, vgg.final_sparsity, vgg.seed) == ("fedsparsify_global", 0.9, 1990)
    cnn = cells["cifar10_iid/local_0.8"]
    assert (cnn.client_learning_rate, cnn.client_momentum, cnn.rounds, cnn.batch_size) == (0.005, 0.75, 200, 32)
    assert not cnn.client_nesterov
    assert (cnn.partition, cnn.classes_per_client, cnn.clients_per_round) == ("iid", None, 10)
    fc = cells["fashion_mnist_noniid2/fedavg"]
    assert (fc.algorithm, fc.client_learning_rate, fc.client_momentum, fc.classes_per_client) == ("fedavg", 0.02, 0.0, 2)


def test_data_paths_and_overrides_apply_to_every_cell():
    cells = grid.paper_grid({"fashion_mnist": "f.npz"}, rounds=3)
    assert cells["fashion_mnist_iid/snip_0.9"]["data_path"] == "f.npz"
    assert cells["cifar10_iid/snip_0.9"]["data_path"] is None
    assert {c["rounds"] for c in cells.values()} == {3}
    with pytest.raises(ValueError, match="data_paths: unknown datasets"):
        grid.paper_grid({"mnist": "m.npz"})
    with pytest.raises(ValueError, match=r"overrides cannot change \['final_sparsity'\]"):
        grid.paper_grid(final_sparsity=0.5)
    # Only selected cells are validated; a bad one names its cell.
    assert grid.select(cells, ["cifar10_iid/snip_0.9"])["cifar10_iid/snip_0.9"].rounds == 3
    with pytest.raises(ValueError, match=r"fine_tune_rounds must be an integer in \[1, 2\].*\(cell cifar10_iid/oneshot_finetune_0.8\)"):
        grid.select(cells, ["cifar10_iid/oneshot_finetune_0.8"])


def test_select_by_shell_patterns():
    cells = grid.paper_grid()
    chosen = grid.select(cells, ["fashion_mnist_noniid2/global_0.9*", "fashion_mnist_noniid2/fedavg"])
    assert list(chosen) == ["fashion_mnist_noniid2/fedavg", "fashion_mnist_noniid2/global_0.9",
                            "fashion_mnist_noniid2/global_0.95", "fashion_mnist_noniid2/global_0.99"]
    with pytest.raises(ValueError, match="pattern 'fmnist/\\*' matches no cell"):
        grid.select(cells, ["fmnist/*"])


def test_run_then_summary_puts_our_numbers_beside_the_papers(finished_grid_cells):
    runs_dir, cells = finished_grid_cells
    status = grid.status(runs_dir, "fashion_mnist_noniid2/global_0.9", cells["fashion_mnist_noniid2/global_0.9"])
    assert status["completed"] and status["rounds_done"] == 2 and 0 <= status["accuracy"] <= 1
    every_run = grid.select(grid.paper_grid({"fashion_mnist": "unused.npz"}, rounds=2, local_epochs=1),
                            ["fashion_mnist_*/fedavg", "fashion_mnist_*/global_*"])
    tables = grid.summarize(runs_dir, every_run, repeats=5)
    rows = tables["fashion_mnist_noniid2"]
    assert [r["run"] for r in rows] == ["fedavg", "global_0.9"]  # FedAvg is the reference.
    assert rows[1]["params_x"] > 1 and rows[0]["hours"] > 0
    table_dir = os.path.join(runs_dir, "fashion_mnist_noniid2", "table")
    with open(os.path.join(table_dir, "reproduction.md")) as f:
        text = f.read()
    global_line = next(line for line in text.splitlines() if line.startswith("| global_0.9 |"))
    assert "| 0.749 |" in global_line and "/ 11,829 |" in global_line and "/ 155 |" in global_line
    assert {"table.md", "comparison.png"} <= set(os.listdir(table_dir))


def test_summary_without_finished_grid_cells_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no finished cell"):
        grid.summarize(str(tmp_path), grid.select(grid.paper_grid(), ["cifar10_iid/*"]))


def test_grid_command_lists_cell_status(finished_grid_cells, capsys):
    runs_dir, _ = finished_grid_cells
    argv = ["grid", "list", "fashion_mnist_noniid2/global_0.9*", "--runs-dir", runs_dir, "--override", "rounds=2"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("fashion_mnist_noniid2/global_0.9 ") and "done" in lines[0] and "accuracy" in lines[0]
    assert lines[1].startswith("fashion_mnist_noniid2/global_0.95 ") and "0/2 rounds" in lines[1]


@pytest.mark.parametrize("flag, message", [
    (["--override", "rounds"], "--override expects KEY=VALUE"),
    (["--override", "round=3"], "--override: unknown field 'round'"),
    (["--override", "rounds=many"], "--override rounds: invalid literal for int()"),
    (["--override", "client_nesterov=yes"], "--override client_nesterov: expected true or false, got 'yes'"),
    (["--data-path", "mnist=x.npz"], "data_paths: unknown datasets"),
])
def test_grid_command_rejects_bad_flags(flag, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(["grid", "list", *flag])
    assert message in capsys.readouterr().err
