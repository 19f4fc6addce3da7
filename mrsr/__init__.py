"""mrsr: super-resolution of MR images with PyTorch and MONAI.

>>> import mrsr
>>> mrsr.Pipeline  # doctest: +ELLIPSIS
<class 'mrsr.pipeline.Pipeline'>
"""

__version__ = "0.1.0"

__all__ = ["Pipeline", "__version__"]


def __getattr__(name: str):
    # Lazy: ``mrsr --help`` and ``mrsr.__version__`` need not import torch and MONAI.
    if name == "Pipeline":
        from mrsr.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'mrsr' has no attribute {name!r}")
