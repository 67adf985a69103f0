"""Thin operators: validate, gather settings, call ``scene/`` and the worker runner, report."""

from . import backend, evaluate, generate, tools

CLASSES = generate.CLASSES + evaluate.CLASSES + tools.CLASSES + backend.CLASSES
