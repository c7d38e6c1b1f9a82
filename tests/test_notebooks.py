"""The Colab notebooks run headlessly, top to bottom, on tiny settings, so they cannot rot."""
import json
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

COLAB = pathlib.Path(__file__).resolve().parents[1] / "colab"


def execute(name: str, **parameters) -> nbformat.NotebookNode:
    """Runs `colab/<name>` in a fresh kernel, with `parameters` assigned after its parameters cell."""
    notebook = nbformat.read(COLAB / name, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n" + "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(COLAB)}}).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, mime: str) -> list[str]:
    """Every output of `mime` type ("text/plain", "image/png", ...) or stream text ("stream")."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if mime == "stream" and output.output_type == "stream":
                found.append(output.text)
            elif mime in output.get("data", {}):
                found.append(output.data[mime])
    return found


@pytest.mark.parametrize("name", ["quickstart.ipynb", "reproduce_fashion_mnist.ipynb"])
def test_notebooks_are_valid_and_state_the_python_requirement(name):
    notebook = nbformat.read(COLAB / name, as_version=4)
    nbformat.validate(notebook)
    assert "Python 3.11" in notebook.cells[0].source
    assert "requirements.txt" in notebook.cells[1].source and "--no-deps" in notebook.cells[1].source


def test_quickstart_trains_exports_and_runs_tflite(tmp_path):
    notebook = execute("quickstart.ipynb", ROUNDS=2, LOCAL_EPOCHS=1, OUTPUT_DIR=str(tmp_path / "run"))
    text = "".join(outputs(notebook, "stream"))
    assert "tff_sparsify is installed" in text  # The set-up cell saw the test environment and skipped pip.
    assert "sparsity 0.8000" in text
    assert "tf: same prediction as Keras on 100.00%" in text and "litert: same prediction as Keras on 100.00%" in text
    assert "ms per batch of 32" in text
    assert len(outputs(notebook, "image/png")) == 1  # The training curves.
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["completed"] and summary["rounds_completed"] == 2


def test_reproduction_notebook_tables_our_runs_beside_the_papers(finished_grid_cells, tiny_fashion_mnist):
    # The runs are the grid tests' (same cells and settings), so the notebook resumes finished runs:
    # what it adds is its own code path from settings to table.
    runs_dir, cells = finished_grid_cells
    notebook = execute(
        "reproduce_fashion_mnist.ipynb",
        CELLS=list(cells),
        DATA_PATH=tiny_fashion_mnist,
        RUNS_DIR=runs_dir,
        OVERRIDES={"rounds": 2, "local_epochs": 1},
    )
    table = "".join(outputs(notebook, "text/markdown"))
    assert "| fedavg |" in table and "| 0.7489 |" in table
    assert "| global_0.9 |" in table and "| 0.749 |" in table
    assert len(outputs(notebook, "image/png")) == 1  # Accuracy vs sparsity and vs communication.
    assert "fashion_mnist_noniid2/global_0.9 fedsparsify_global, s_f=0.9, 2 rounds x 1 epochs" in "".join(
        outputs(notebook, "stream"))
