"""SplatSketch backend: optimises 3D Bézier curves rendered as Gaussian splats.

Runs in its own Python (``python -m backend run JOB_DIR``, with the extension folder as the working
folder); imports torch, and of the rest of the extension only :mod:`contract`. Nothing on the
Blender side imports it.
"""
