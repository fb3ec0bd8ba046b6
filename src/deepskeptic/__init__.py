"""deepskeptic: deep networks next to the baselines they must beat.

The Python API (the command line is a thin layer over the same calls)::

    import deepskeptic
    run = deepskeptic.train("image", data="digits", model="cnn", epochs=5)
    run.predict(images)
    deepskeptic.compare("image", data="digits", models=["mlp", "cnn"], seeds=3, epochs=5).table()
    deepskeptic.load("runs/...").evaluate()
"""
from deepskeptic._version import __version__
from deepskeptic.errors import UserError

_API = ("train", "compare", "load", "resume", "Run", "Comparison")


def __getattr__(name: str):
    """The API's names, imported on first use: ``import deepskeptic`` alone stays light (no torch,
    no task modules), and the command line does not pay for what it does not use."""
    if name in _API:
        from deepskeptic import api
        return getattr(api, name)
    raise AttributeError(f"module 'deepskeptic' has no attribute {name!r}")

__all__ = ["__version__", "train", "compare", "load", "resume", "Run", "Comparison", "UserError"]
