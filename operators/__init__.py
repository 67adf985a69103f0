"""Thin operators: validate, gather settings, call ``scene/`` and the worker runner, report."""

from . import generate, tools

CLASSES = generate.CLASSES + tools.CLASSES
