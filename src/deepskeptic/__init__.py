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
# Imported eagerly: the function ``compare`` must win over the submodule ``deepskeptic.compare``,
# which Python would otherwise bind to the same attribute when it is first imported.
from deepskeptic.api import Comparison, Run, compare, load, resume, train

__all__ = ["__version__", "train", "compare", "load", "resume", "Run", "Comparison", "UserError"]
