"""SplatSketch: turn a mesh into a few editable 3D Bézier curves (Blender 4.2+ extension).

Registration only. Every UI module exposes a ``CLASSES`` tuple; they are registered in order and
unregistered in reverse, and the ``splatsketch`` command-line handle is kept so that disabling the
add-on leaves nothing behind (no classes, properties, menu entries, CLI commands or running workers).
"""

from . import cli, operators, panels, preferences, properties

CLASSES = properties.CLASSES + preferences.CLASSES + operators.CLASSES + panels.CLASSES
_cli_handles: list = []


def register():
    import bpy

    for cls in CLASSES:
        bpy.utils.register_class(cls)
    properties.register_properties()
    for menu, draw in operators.MENUS:
        getattr(bpy.types, menu).append(draw)
    if hasattr(bpy.utils, "register_cli_command"):  # Blender 4.2+
        _cli_handles.append(bpy.utils.register_cli_command("splatsketch", cli.main))


def unregister():
    import bpy

    from .jobs.runner import abort_all

    abort_all()  # a worker must not outlive its add-on
    while _cli_handles:
        bpy.utils.unregister_cli_command(_cli_handles.pop())
    for menu, draw in operators.MENUS:
        getattr(bpy.types, menu).remove(draw)
    properties.unregister_properties()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
