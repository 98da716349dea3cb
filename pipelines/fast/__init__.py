"""The ``fast`` method: Magenta's arbitrary image stylization networks on onnxruntime (CPU, offline)."""

from pipelines.fast.method import FastMethod

__all__ = ["FastMethod"]
