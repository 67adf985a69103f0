"""View3D > Sidebar > Sketch: settings, Generate / Cancel, live progress, and what to do with the result.

The panel only reads state: settings from ``scene.splatsketch``, the run from
``window_manager.splatsketch`` (not saved in the .blend), so drawing never starts or changes work.
"""

from __future__ import annotations

import bpy

from ..scene import id_keys
from ..widgets import progress, prop_rows, wrap


class _SketchPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Sketch"


class SPLATSKETCH_PT_main(_SketchPanel, bpy.types.Panel):
    bl_idname = "SPLATSKETCH_PT_main"
    bl_label = "SplatSketch"

    def draw(self, context):
        layout = self.layout
        props, state = context.scene.splatsketch, context.window_manager.splatsketch
        layout.use_property_split = True
        layout.use_property_decorate = False

        col = layout.column()
        col.enabled = not state.running
        presets = col.row(align=True)
        presets.operator("splatsketch.apply_preset", text="Preview").preset = "preview"
        presets.operator("splatsketch.apply_preset", text="Final").preset = "final"
        col.prop(props, "source", text="Object")
        if props.source is None:
            active = context.active_object
            note = f"Active: {active.name}" if active and active.type == "MESH" else "Select a mesh object"
            col.label(text=note, icon="OBJECT_DATA" if active and active.type == "MESH" else "ERROR")
        prop_rows(col, props, "curves", "segments", "iterations", "train_views", "stroke_width", "init", "seed",
                  "prompt", "use_clip")

        row = layout.row(align=True)
        row.scale_y = 1.4
        if state.running:
            row.operator("splatsketch.cancel", text="Cancel", icon="CANCEL")
            # the sidebar is narrow: iteration in the bar, loss and time left on the line below
            head, _, rest = (state.status or "Starting").partition(" · ")
            progress(layout, state.progress, head)
            layout.label(text=rest or "Esc cancels", icon="TIME" if rest else "INFO")
            return
        row.operator("splatsketch.generate", text="Generate", icon="OUTLINER_OB_CURVE")
        if props.use_clip and state.clip_status == "missing":
            from ..preferences import get_preferences

            box = layout.box()
            fallback = getattr(get_preferences(context), "allow_geometry_fallback", True)
            # short lines: the sidebar is about 30 characters wide at its default width
            lines = ["No CLIP weights here:"]
            lines += (["Generate runs geometry-only", "(lines + surface). For CLIP:"] if fallback
                      else ["Generate stops (Geometry-Only", "Fallback is off). For CLIP:"])
            lines += ["Preferences > Add-ons >", "SplatSketch > CLIP"]
            col = box.column(align=True)
            for i, line in enumerate(lines):
                col.label(text=line, icon="INFO" if i == 0 else "BLANK1")
        if state.last_error:
            box = layout.box()
            for i, line in enumerate(wrap(state.last_error, 48)):
                box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")


class SPLATSKETCH_PT_result(_SketchPanel, bpy.types.Panel):
    bl_idname = "SPLATSKETCH_PT_result"
    bl_label = "Result"
    bl_parent_id = "SPLATSKETCH_PT_main"

    @classmethod
    def poll(cls, context):
        state = context.window_manager.splatsketch
        return bool(state.summary) and not state.running

    def draw(self, context):
        layout = self.layout
        state = context.window_manager.splatsketch
        for line in wrap(state.summary, 48):
            layout.label(text=line)
        col = layout.column(align=True)
        col.operator("splatsketch.select_result", icon="RESTRICT_SELECT_OFF")
        col.operator("splatsketch.convert_grease_pencil", icon="OUTLINER_OB_GREASEPENCIL")
        result = bpy.data.objects.get(state.last_result) if state.last_result else None
        capture = result.get(id_keys.CAPTURE) if result is not None else None
        if capture:  # made from pictures: run the same capture again, not Generate on a mesh
            op = col.operator("splatsketch.sketch_from_images", text="Run Again (New Seed)", icon="FILE_REFRESH")
            op.filepath, op.masks = capture, result.get(id_keys.MASKS, "")
        else:
            op = col.operator("splatsketch.generate", text="Run Again (New Seed)", icon="FILE_REFRESH")
        op.new_seed = True


class SPLATSKETCH_PT_evaluation(_SketchPanel, bpy.types.Panel):
    """Figures of the active sketch on held-out views, and its report pictures."""

    bl_idname = "SPLATSKETCH_PT_evaluation"
    bl_label = "Evaluation"
    bl_parent_id = "SPLATSKETCH_PT_main"

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and (id_keys.SOURCE in obj or id_keys.CAPTURE in obj)

    def draw(self, context):
        import json

        layout = self.layout
        obj = context.active_object
        layout.enabled = not context.window_manager.splatsketch.running
        try:
            figures = json.loads(obj.get(id_keys.EVALUATION, ""))
        except (TypeError, ValueError):
            figures = None
        if figures:
            col = layout.column(align=True)
            col.label(text=f"F {figures['f_mean']:.2f}  (worst view {figures['f_min']:.2f})",
                      icon="CHECKMARK" if figures["f_mean"] >= 0.8 else "INFO")
            col.label(text=f"Precision {figures['precision_mean']:.2f}  Recall {figures['recall_mean']:.2f}")
            if "outline_recall_mean" in figures:  # how much of the silhouette's boundary is drawn
                levels = "".join(f"  first {level['strokes']}: {level['outline_recall_mean']:.2f}"
                                 for level in figures.get("levels") or [])
                col.label(text=f"Outline {figures['outline_recall_mean']:.2f}{levels}")
            col.label(text=f"Chamfer {figures['chamfer_px_mean']:.1f} px  Interior ink "
                           f"{figures['ink_interior_mean']:.2f}")
            if "surface_distance_mean" in figures:
                col.label(text=f"Surface distance {figures['surface_distance_mean']:.3f}")
            if "looping_strokes" in figures:
                loops = figures["looping_strokes"]
                col.label(text=f"Looping strokes {loops} of {figures.get('curves', '?')}  Turning "
                               f"{figures['turning_mean']:.1f} rad", icon="ERROR" if loops else "NONE")
            row = layout.row(align=True)
            row.operator("splatsketch.open_report", text="Report", icon="IMAGE_DATA").which = "report"
            row.operator("splatsketch.open_report", text="Turntable", icon="FILE_MOVIE").which = "turntable"
        else:
            layout.label(text=f"{obj.name}: not evaluated yet")
        layout.operator("splatsketch.evaluate", text="Evaluate Again" if figures else "Evaluate",
                        icon="VIEWZOOM")


class SPLATSKETCH_PT_strokes(_SketchPanel, bpy.types.Panel):
    """The active sketch's strokes: how many are shown, their style, drawn-on animation."""

    bl_idname = "SPLATSKETCH_PT_strokes"
    bl_label = "Strokes"
    bl_parent_id = "SPLATSKETCH_PT_main"

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "CURVE"  # a sketch, or strokes drawn by hand

    def draw(self, context):
        import json

        from ..scene import stroke_style

        layout = self.layout
        obj = context.active_object
        modifier = stroke_style.style_modifier(obj)
        layout.enabled = not context.window_manager.splatsketch.running
        if modifier is None:  # a curve drawn by hand: the rest of its strokes can be found
            layout.label(text="Strokes drawn by hand: pick", icon="INFO")
            layout.label(text="their mesh as Object above,", icon="BLANK1")
            layout.label(text="then Add Strokes", icon="BLANK1")
            layout.operator("splatsketch.add_strokes", icon="ADD")
            return
        layout.use_property_split = True
        layout.use_property_decorate = False
        col = layout.column(align=True)
        total = len(obj.data.splines)
        col.prop(obj, id_keys.STROKES_SHOWN, text=f"Shown (of {total})")
        keep = layout.column(align=True)  # full width each: the sidebar is narrow
        keep.operator("splatsketch.regenerate_strokes", icon="FILE_REFRESH")
        keep.operator("splatsketch.add_strokes", icon="ADD")
        try:  # the last run's figures: F of its first n strokes, after the strokes it kept
            metrics = json.loads(obj.get(id_keys.METRICS, "{}"))
            first_f, kept = metrics.get("first_strokes_f") or [], int(metrics.get("kept_strokes") or 0)
        except (TypeError, ValueError, AttributeError):
            first_f, kept = [], 0
        shown = getattr(obj, id_keys.STROKES_SHOWN)
        if kept < shown <= kept + len(first_f) and kept + len(first_f) == total:  # the last run's own figures
            col.label(text=f"Held-out line F of these {shown}: {first_f[shown - kept - 1]:.2f}")
        if first_f and shown <= total // 4 and not _made_with_abstraction(obj):
            # docs/ABSTRACTION.md: a quarter of a sketch made without it reads worse than a run at that count
            col.label(text="For a quarter or fewer, make it", icon="INFO")
            col.label(text="with Abstraction Levels (Advanced)", icon="BLANK1")
        row = layout.row(align=True)
        for style in ("UNIFORM", "PEN", "MARKER"):
            row.operator("splatsketch.stroke_style", text=style.title()).style = style
        col = layout.column(align=True)
        for name in ("Width", "Taper", "Importance Weight"):
            label = "Weight" if name == "Importance Weight" else name  # the sidebar is narrow
            col.prop(modifier, stroke_style.input_path(modifier, name), text=label)
        col = layout.column(align=True)
        col.use_property_decorate = True  # the keyframe dot: Drawn is what the animation keys
        col.prop(modifier, stroke_style.input_path(modifier, "Drawn"), text="Drawn")
        col.prop(modifier, stroke_style.input_path(modifier, "Overlap"), text="Overlap")
        row = layout.row(align=True)
        row.operator("splatsketch.animate_drawing", icon="GP_SELECT_STROKES")
        if stroke_style.drawing_range(obj):
            row.operator("splatsketch.clear_drawing", text="", icon="X")


class SPLATSKETCH_PT_advanced(_SketchPanel, bpy.types.Panel):
    bl_idname = "SPLATSKETCH_PT_advanced"
    bl_label = "Advanced"
    bl_parent_id = "SPLATSKETCH_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        props = context.scene.splatsketch
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.enabled = not context.window_manager.splatsketch.running
        col = layout.column(heading="Loss Weights", align=True)
        from ..settings_map import LOSS_PROPS

        for name in LOSS_PROPS:  # every loss of the backend's registry, in its order
            sub = col.row(align=True)
            sub.active = props.use_clip or not name.startswith("clip")
            sub.prop(props, f"w_{name}")
        col = layout.column()
        prop_rows(col, props, "views_per_step", "best_of", "image_size", "targets", "heldout_views", "augmentations")
        row = col.row()
        row.active = props.use_clip
        row.prop(props, "clip_compile")
        prop_rows(col, props, "lr", "hard_views", "abstraction", "ink_budget", "reseed")


def _made_with_abstraction(obj) -> bool:
    """Whether the sketch's run fitted its first quarter alone too (setting ``abstraction``)."""
    import json

    try:
        return float(json.loads(obj.get(id_keys.SETTINGS, "{}")).get("abstraction", 0.0)) > 0.0
    except (TypeError, ValueError, AttributeError):
        return False


CLASSES = (SPLATSKETCH_PT_main, SPLATSKETCH_PT_result, SPLATSKETCH_PT_strokes, SPLATSKETCH_PT_evaluation,
           SPLATSKETCH_PT_advanced)
