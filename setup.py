"""Installs tff_sparsify. Use `make install`: it installs the pinned set in requirements.txt first."""
import importlib.util
import os
import subprocess
import sys

from setuptools import find_packages, setup

SUPPORTED_PYTHON = (3, 11)

if sys.version_info[:2] != SUPPORTED_PYTHON:
    sys.exit(
        "tff_sparsify needs Python 3.11: TensorFlow Federated 0.87 (the newest release) supports "
        "Python 3.9-3.11 and its pinned dependencies are locked for 3.11; Python %d.%d has no "
        "TensorFlow 2.14 wheels. Install Python 3.11 and run `make install PYTHON=python3.11`."
        % sys.version_info[:2]
    )


def _target_has_stack() -> bool:
    """Whether the environment being installed into holds TensorFlow Federated: this interpreter
    sees it (no build isolation), or a fresh one without PYTHONPATH does (pip's isolated build
    environment hides the target's packages from this script through it)."""
    if importlib.util.find_spec("tensorflow_federated") is not None:
        return True
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow_federated') is None)"
    return subprocess.run([sys.executable, "-c", probe], env=env).returncode == 0


SKIP_CHECK = "TFF_SPARSIFY_SKIP_STACK_CHECK"  # =1: build anyway (e.g. a wheel for another environment).

if os.environ.get(SKIP_CHECK) != "1" and not _target_has_stack():  # pip would backtrack for minutes.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(
        "tff_sparsify installs on its pinned stack (TensorFlow Federated 0.87, TensorFlow 2.14, ...), which "
        "pip cannot resolve by itself: TFF 0.87 pins a jaxlib that has no wheel. Install the lock first, "
        "then the package, without dependency resolution:\n"
        f"    pip install --no-deps -r {os.path.join(here, 'requirements.txt')} && pip install --no-deps {here}\n"
        f"(To build a wheel for another environment, set {SKIP_CHECK}=1.)"
    )

setup(
    name="tff_sparsify",
    version="0.1.0",
    description="Federated progressive sparsification (FedSparsify) on TensorFlow Federated.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["tff_sparsify", "tff_sparsify.*"]),
    # Versions are pinned in requirements.txt (installed first, with --no-deps; see its header).
    install_requires=[
        "tensorflow-federated",
        "tensorflow",
        "tensorflow-model-optimization",
        "tensorflow-datasets",
        "numpy",
        "scikit-learn",
        "matplotlib",
        "tqdm",
    ],
    entry_points={"console_scripts": ["tff-sparsify = tff_sparsify.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: Apache Software License",
    ],
)
