"""Thin operators: validate, gather settings, call ``scene/`` and the worker runner, report."""

from . import backend_setup, evaluate, generate, images, style, tools

CLASSES = generate.CLASSES + images.CLASSES + evaluate.CLASSES + tools.CLASSES + style.CLASSES + backend_setup.CLASSES
MENUS = (("VIEW3D_MT_add", images.menu_add),)  # (menu, draw function appended to it)
