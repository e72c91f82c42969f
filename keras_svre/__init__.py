"""keras_svre: stochastic variance-reduced extragradient (SVRE) for Keras 3."""

__version__ = "0.1.0"
