"""Blender-side helpers of SplatSketch: mesh extraction, target renders, job folders, result curves.

Pure-ish functions over ``bpy`` and numpy, no operators and no torch: the operators, the CLI and the
tests call them, so each one cleans up after itself and leaves the user's scene as it found it.
"""
