"""The Colab notebooks run headlessly, top to bottom, on tiny settings, so they cannot rot: on a Python
3.11 kernel that has tff_sparsify, and on a newer Python's kernel (Colab's) that drives a Python 3.11."""
import json
import pathlib
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

COLAB = pathlib.Path(__file__).resolve().parents[1] / "colab"
NOTEBOOKS = ("quickstart.ipynb", "reproduce_fashion_mnist.ipynb")
NEWER_PYTHONS = ("3.13", "3.12")  # Colab's runtime runs 3.13; no TFF release installs there.
KERNEL_CACHE = pathlib.Path.home() / ".cache" / "tff_sparsify" / "test_kernels"
KERNEL_PACKAGES = ("ipykernel", "numpy", "ai-edge-litert")  # What the quickstart needs in its own kernel.


def execute(name: str, km: KernelManager | None = None, **parameters) -> nbformat.NotebookNode:
    """Runs `colab/<name>` in a fresh kernel (of `km`, else this Python's), with `parameters` assigned
    after its parameters cell."""
    notebook = nbformat.read(COLAB / name, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n" + "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    NotebookClient(notebook, km=km, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(COLAB)}}).execute()
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


def set_up_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return next(c for c in notebook.cells if "REPOSITORY_URL = " in c.source)


@pytest.fixture(scope="module")
def newer_python_kernel() -> KernelManager:
    """A kernel on pyenv's Python 3.13 (or 3.12), in a venv with KERNEL_PACKAGES from PyPI cached in
    KERNEL_CACHE; skips without pyenv, without those Pythons, or when pip cannot install the packages."""
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        pytest.skip("pyenv not found: it provides the Python 3.12/3.13 this test runs a kernel on")
    root = pathlib.Path(subprocess.run([pyenv, "root"], capture_output=True, text=True, check=True).stdout.strip())
    bases = [p for version in NEWER_PYTHONS for p in sorted(root.glob(f"versions/{version}.*/bin/python"))]
    if not bases:
        pytest.skip(f"neither Python {' nor '.join(NEWER_PYTHONS)} in {root}/versions (pyenv install 3.13)")
    venv = KERNEL_CACHE / f"py{bases[0].parents[1].name}"
    python = venv / "bin" / "python"
    probe = [python, "-c", "import ipykernel, numpy, ai_edge_litert"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([bases[0], "-m", "venv", venv], check=True)
        pip = subprocess.run([python, "-m", "pip", "install", "--quiet", "--timeout", "30", "--retries", "1",
                              *KERNEL_PACKAGES], capture_output=True, text=True)
        if pip.returncode:
            shutil.rmtree(venv)
            pytest.skip(f"pip could not install {', '.join(KERNEL_PACKAGES)} into a Python {bases[0].parents[1].name} "
                        f"venv (no network?): {pip.stderr.strip().splitlines()[-1:]}")
    spec = venv / "kernels" / "newer_python" / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                "display_name": f"Python {bases[0].parents[1].name}", "language": "python"}))
    return KernelManager(kernel_name="newer_python", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parents[1])]))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_are_valid_and_their_colab_badge_opens_the_cloned_repository(name):
    notebook = nbformat.read(COLAB / name, as_version=4)
    nbformat.validate(notebook)
    repository = re.search(r'REPOSITORY_URL = "https://github\.com/([^"]+)"', set_up_cell(notebook).source).group(1)
    assert f"(https://colab.research.google.com/github/{repository}/blob/main/colab/{name})" in notebook.cells[0].source
    assert "Python 3.11" in notebook.cells[0].source


def test_the_notebooks_share_one_set_up_cell():
    first, second = (set_up_cell(nbformat.read(COLAB / name, as_version=4)).source for name in NOTEBOOKS)
    assert first == second


def check_quickstart(notebook: nbformat.NotebookNode, output_dir: pathlib.Path) -> tuple[str, str]:
    """Asserts that the quickstart trained, showed its curves, exported, and ran the .tflite in its own
    kernel as the Keras model predicts; returns its stream output and the kernel's Python version."""
    text = "".join(outputs(notebook, "stream"))
    kernel_python = re.search(r"this kernel runs Python (\S+)", text).group(1)
    assert f"results in {output_dir}" in text  # The command line's own output, streamed into the cell.
    assert "sparsity 0.8000" in text
    assert "tf: same prediction as Keras on 100.00%" in text and "litert: same prediction as Keras on 100.00%" in text
    assert f"in this kernel (Python {kernel_python}): same prediction as Keras on 100.00%" in text
    assert "ms per batch of 32" in text
    assert len(outputs(notebook, "image/png")) == 1  # The training curves.
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["completed"] and summary["rounds_completed"] == 2
    return text, kernel_python


def test_quickstart_on_a_python_311_kernel_with_tff_sparsify(tmp_path):
    notebook = execute("quickstart.ipynb", ROUNDS=2, LOCAL_EPOCHS=1, OUTPUT_DIR=str(tmp_path / "run"))
    text, kernel_python = check_quickstart(notebook, tmp_path / "run")
    assert kernel_python.startswith("3.11.")
    assert f"tff_sparsify runs in {sys.executable} (Python 3.11)" in text  # The kernel itself: nothing built.


def test_quickstart_on_a_newer_python_kernel_drives_a_python_311(newer_python_kernel, tmp_path):
    notebook = execute("quickstart.ipynb", newer_python_kernel, ROUNDS=2, LOCAL_EPOCHS=1,
                       OUTPUT_DIR=str(tmp_path / "run"), PYTHON=sys.executable)
    text, kernel_python = check_quickstart(notebook, tmp_path / "run")
    assert kernel_python.startswith(NEWER_PYTHONS)
    assert f"tff_sparsify runs in {sys.executable} (Python 3.11)" in text


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
    assert "fashion_mnist_noniid2/global_0.9: 2 rounds done" in "".join(outputs(notebook, "stream"))
