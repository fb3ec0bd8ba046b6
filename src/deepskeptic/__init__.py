"""deepskeptic: deep networks next to the baselines they must beat."""
__version__ = "0.1.0"
