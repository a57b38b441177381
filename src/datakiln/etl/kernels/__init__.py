"""The bake's JAX kernels: pure functions of arrays (jax + numpy only), one module per modality.

Each kernel is tested against an independent reference (Pillow, librosa).
"""

__all__ = ["audio", "image", "phash", "text"]
