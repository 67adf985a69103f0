"""``bin/splatsketch-batch``: sketch a whole asset library on a local Ray instance or a Ray cluster.

It sits beside the add-on and the backend, not between them: every asset is one ordinary headless
run (``blender -b -c splatsketch`` or ``bin/splatsketch``) in its own process, so a batch sketch is
the same as a single run with the same seed. This package imports neither bpy nor torch; only the
driver imports ray. Modules: ``sources`` (what to sketch), ``task`` (one asset, on a Ray worker),
``index`` (the resumable record), ``gallery`` (index.html), ``progress`` (the terminal), ``main``.
"""
