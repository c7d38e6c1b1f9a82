"""Installing into one's own environment: `pip install <checkout>` stops at once, saying what to run."""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_pip_install_of_the_checkout_without_the_stack_stops_and_says_what_to_run(tmp_path):
    checkout = tmp_path / "checkout"
    listed = subprocess.run(["git", "ls-files", "setup.py", "README.md", "requirements.txt", "tff_sparsify"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    result = subprocess.run([str(tmp_path / "venv" / "bin" / "pip"), "install", str(checkout)],
                            capture_output=True, text=True, timeout=600)
    if "No matching distribution found for setuptools" in result.stdout + result.stderr:
        pytest.skip("no package index reachable for pip's build dependencies (setuptools)")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"pip install --no-deps -r {checkout / 'requirements.txt'} && pip install --no-deps {checkout}" in output
    assert "Collecting tensorflow" not in output  # Stopped before resolving (and downloading) the stack.
