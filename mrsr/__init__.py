"""mrsr: super-resolution of MR images with PyTorch and MONAI."""

__version__ = "0.1.0"
