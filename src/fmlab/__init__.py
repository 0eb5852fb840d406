"""fmlab: run and understand training experiments on Fashion-MNIST."""

__version__ = "0.1.0"
