"""SplatSketch backend: optimises 3D Bézier curves rendered as Gaussian splats.

Importable without Blender and without torch: this package's ``__init__`` and the numpy-only
modules (``config``, ``cameras``, ``schema``) are what the Blender add-on may import; everything
that needs torch is imported lazily by the worker (``python -m backend run JOB_DIR``).
"""

__version__ = "0.1.0"
