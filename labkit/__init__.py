"""labkit: a lab for Self-supervised Label Augmentation (Lee, Hwang & Shin, ICML 2020)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
