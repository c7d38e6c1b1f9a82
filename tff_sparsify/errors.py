"""Errors that stop a run, importable without TensorFlow (the command line catches them)."""


class RunError(RuntimeError):
    """A run cannot go on; the message says why and what to do."""


class NonFiniteError(RunError):
    """A round produced no finite client update, or a non-finite global model."""


class DirectoryInUseError(RunError):
    """Another process holds the output directory's lock."""
