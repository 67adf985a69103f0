"""The artist's controls on a finished sketch: stroke style presets and drawn-on animation.

Thin operators over ``scene/stroke_style.py``; the Strokes Shown slider is a property of the object
(``properties.py``). All act on the active sketch, refuse while a run is going (the run may be
writing that very object), and are undoable.
"""

from __future__ import annotations

import bpy

from ..scene import stroke_style


def _sketch_problem(context) -> str:
    """Why the style operators cannot act now, or ''."""
    if context.window_manager.splatsketch.running:
        return "A SplatSketch run is going: wait for it to finish or cancel it"
    obj = context.active_object
    if obj is None or obj.type != "CURVE" or stroke_style.style_modifier(obj) is None:
        return "Select a SplatSketch result (a sketch with its SplatSketch Strokes modifier)"
    return ""


class _OnSketch:
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        problem = _sketch_problem(context)
        if problem:
            cls.poll_message_set(problem)
        return not problem


class SPLATSKETCH_OT_stroke_style(_OnSketch, bpy.types.Operator):
    """Draw the active sketch's strokes in a style: taper, weight by importance, width"""

    bl_idname = "splatsketch.stroke_style"
    bl_label = "Stroke Style"

    style: bpy.props.EnumProperty(items=[
        ("UNIFORM", "Uniform", "Even tubes of the run's width, as the optimiser drew them"),
        ("PEN", "Pen", "Tapered ends; less important strokes thinner"),
        ("MARKER", "Marker", "Broad, nearly even strokes with soft ends"),
    ])

    def execute(self, context):
        obj = context.active_object
        stroke_style.apply_style(obj, self.style, stroke_style.base_width(obj))
        self.report({"INFO"}, f"{obj.name}: {self.style.title()} strokes")
        return {"FINISHED"}


class SPLATSKETCH_OT_animate_drawing(_OnSketch, bpy.types.Operator):
    """Key the active sketch to draw itself on, stroke after stroke in order of importance or in a sweep
    (keys on its modifier's Drawn input, editable in the Graph Editor)"""

    bl_idname = "splatsketch.animate_drawing"
    bl_label = "Animate Drawing"

    frame_start: bpy.props.IntProperty(name="Start", default=1, description="Frame the drawing starts on")
    frame_end: bpy.props.IntProperty(name="End", default=96, description="Frame the whole sketch is drawn by")
    overlap: bpy.props.FloatProperty(name="Overlap", default=0.3, min=0.0, max=1.0, subtype="FACTOR",
                                     description="0: one stroke after the other; 1: all strokes at once")
    easing: bpy.props.EnumProperty(name="Easing", default="EASE_IN_OUT", items=[
        ("EASE_IN_OUT", "Ease In and Out", "Starts and ends slowly"),
        ("LINEAR", "Linear", "An even pace throughout")])
    order: bpy.props.EnumProperty(name="Order", default="IMPORTANCE", items=[
        ("IMPORTANCE", "Importance", "The most important stroke first: the big shape, then the detail"),
        ("BOTTOM_TO_TOP", "Bottom to Top", "Strokes drawn as a sweep upward (object Z)"),
        ("LEFT_TO_RIGHT", "Left to Right", "A sweep along the object's X"),
        ("FRONT_TO_BACK", "Front to Back", "A sweep along the object's Y")])

    def invoke(self, context, event):
        scene = context.scene
        self.frame_start = scene.frame_start
        self.frame_end = min(scene.frame_end, scene.frame_start + 4 * round(scene.render.fps / scene.render.fps_base))
        return self.execute(context)

    def execute(self, context):
        if self.frame_end <= self.frame_start:
            self.report({"ERROR"}, f"The drawing needs at least one frame: End ({self.frame_end}) must come after "
                                   f"Start ({self.frame_start})")
            return {"CANCELLED"}
        obj = context.active_object
        stroke_style.animate_drawing(obj, self.frame_start, self.frame_end, self.overlap, self.easing, self.order)
        self.report({"INFO"}, f"{obj.name}: drawn on from frame {self.frame_start} to {self.frame_end}")
        return {"FINISHED"}


class SPLATSKETCH_OT_clear_drawing(_OnSketch, bpy.types.Operator):
    """Remove the drawn-on animation: the whole sketch is drawn on every frame"""

    bl_idname = "splatsketch.clear_drawing"
    bl_label = "Clear Drawing Animation"

    def execute(self, context):
        stroke_style.clear_drawing(context.active_object)
        return {"FINISHED"}


CLASSES = (SPLATSKETCH_OT_stroke_style, SPLATSKETCH_OT_animate_drawing, SPLATSKETCH_OT_clear_drawing)
