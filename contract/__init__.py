"""What the Blender side and the backend both import: plain Python and numpy, never bpy or torch.

``protocol`` (exit codes, events, file names, the job folder's writer), ``settings`` (every job
setting, checked), ``presets``, ``cameras`` (the orbit and the pinhole), ``clip_weights`` (download
sizes) and ``setup_lock`` (one backend set-up at a time).
"""

__version__ = "0.1.0"
