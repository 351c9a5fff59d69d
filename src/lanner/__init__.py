"""lanner: train, evaluate and share image classifiers and object detectors on your own images."""

__version__ = "0.1.0"
