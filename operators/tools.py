"""After-run actions (select the result, convert it to Grease Pencil) and the backend check."""

from __future__ import annotations

import threading

import bpy

from ..jobs import describe_backend, probe_backend
from ..preferences import backend_python


def last_result(context):
    name = context.window_manager.splatsketch.last_result
    return bpy.data.objects.get(name) if name else None


def last_result_in_view(context) -> bool:
    """The last sketch exists and is in the view layer (so it can be selected and acted on)."""
    obj = last_result(context)
    return obj is not None and obj.name in context.view_layer.objects


def make_active(context, obj) -> None:
    """Select only ``obj`` and make it active (it must be in the view layer)."""
    for other in context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj


class SPLATSKETCH_OT_select_result(bpy.types.Operator):
    """Select the last sketch and make it active"""

    bl_idname = "splatsketch.select_result"
    bl_label = "Select Result"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return last_result_in_view(context)

    def execute(self, context):
        make_active(context, last_result(context))
        return {"FINISHED"}


def grease_pencil_target() -> str:
    """``GREASEPENCIL`` in Blender 4.3+ (GPv3), ``GPENCIL`` in 4.2."""
    items = bpy.ops.object.convert.get_rna_type().properties["target"].enum_items.keys()
    return "GREASEPENCIL" if "GREASEPENCIL" in items else "GPENCIL"


def grease_pencil_data():
    """The Grease Pencil v3 ID collection (4.3+), or None on 4.2's GPv2."""
    v3 = getattr(bpy.data, "grease_pencils_v3", None)
    return v3 if v3 is not None else bpy.data.grease_pencils if bpy.app.version >= (4, 3) else None


def grease_pencil_from_curves(curve_obj, samples: int = 24):
    """A GPv3 object with one stroke per shown spline, most important first, each point's radius
    the strokes modifier's (width, taper, importance weight). Drawn on like the sketch when that is
    animated: the drawing starts at the animation's first frame and a Build modifier draws it."""
    import numpy as np

    from ..scene import stroke_style

    gp = grease_pencil_data().new(f"{curve_obj.name} GP")
    drawn = stroke_style.drawing_range(curve_obj)
    frame = int(drawn[0]) if drawn else bpy.context.scene.frame_current
    drawing = gp.layers.new("Sketch").frames.new(frame).drawing
    t = np.linspace(0.0, 1.0, samples)[:, None]
    basis = np.hstack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])
    matrix = np.array(curve_obj.matrix_world)
    splines = [s for s in list(curve_obj.data.splines)[:stroke_style.shown_count(curve_obj)]
               if s.type == "BEZIER" and len(s.bezier_points) >= 2]
    order = stroke_style.drawing_order(curve_obj, splines)  # Build draws the strokes in the order they are in
    ranks, splines = order, [splines[i] for i in order]
    strokes = []
    for spline in splines:  # each segment sampled, the shared end points once
        bps = spline.bezier_points
        parts = [basis @ np.array([a.co, a.handle_right, b.handle_left, b.co]) for a, b in zip(bps[:-1], bps[1:])]
        strokes.append(np.vstack([parts[0]] + [p[1:] for p in parts[1:]]) @ matrix[:3, :3].T + matrix[:3, 3])
    width = max(stroke_style.stroke_width(curve_obj), 1e-4)
    taper = float(stroke_style.get_input(curve_obj, "Taper") or 0.0)
    weight = float(stroke_style.get_input(curve_obj, "Importance Weight") or 0.0)
    drawing.add_strokes([len(p) for p in strokes])
    for rank, stroke, points in zip(ranks, drawing.strokes, strokes):
        radii = width * stroke_style.radius_factors(np.linspace(0.0, 1.0, len(points)), rank, len(strokes),
                                                    taper, weight)
        for point, co, radius in zip(stroke.points, points, radii):
            point.position, point.radius = co, float(radius)
    material = bpy.data.materials.new("SplatSketch GP Ink")
    bpy.data.materials.create_gpencil_data(material)
    material.grease_pencil.color = (0.0, 0.0, 0.0, 1.0)
    gp.materials.append(material)
    obj = bpy.data.objects.new(gp.name, gp)
    for collection in curve_obj.users_collection:
        collection.objects.link(obj)
    if drawn:
        _build_modifier(obj.modifiers.new("Draw On", "GREASE_PENCIL_BUILD"), curve_obj, drawn)
    return obj


def _build_modifier(build, curve_obj, drawn) -> None:
    """Grease Pencil's Build draws the strokes in their order over the sketch's drawn-on frames."""
    from ..scene import stroke_style

    overlap = float(stroke_style.get_input(curve_obj, "Overlap") or 0.0)
    build.mode = "CONCURRENT" if overlap >= 0.99 else "SEQUENTIAL"
    build.transition = "GROW"
    build.time_mode = "FRAMES"
    build.start_delay = 0.0
    build.length = max(int(round(drawn[1] - drawn[0])), 1)


class SPLATSKETCH_OT_convert_grease_pencil(bpy.types.Operator):
    """Make a Grease Pencil copy of the last sketch (its shown strokes, their weight and drawn-on
    animation); the curves stay editable"""

    bl_idname = "splatsketch.convert_grease_pencil"
    bl_label = "Convert to Grease Pencil"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return last_result_in_view(context) and context.mode == "OBJECT"

    def execute(self, context):
        from ..scene import stroke_style

        source = last_result(context)
        make_active(context, source)
        if grease_pencil_data() is not None:  # GPv3 (4.3+): Blender's convert gives bare anchors or nothing
            created, result = [grease_pencil_from_curves(source)], {"FINISHED"}
        else:
            before = set(bpy.data.objects)
            with context.temp_override(active_object=source, selected_objects=[source],
                                       selected_editable_objects=[source]):
                result = bpy.ops.object.convert(target=grease_pencil_target(), keep_original=True)
            created = [obj for obj in bpy.data.objects if obj not in before]
            drawn = stroke_style.drawing_range(source)
            if created and drawn:
                _build_modifier(created[0].grease_pencil_modifiers.new("Draw On", "GP_BUILD"), source, drawn)
        if "FINISHED" not in result or not created:
            self.report({"ERROR"}, "Blender could not convert the sketch to Grease Pencil")
            return {"CANCELLED"}
        created[0].name = f"{source.name} GP"
        make_active(context, created[0])
        self.report({"INFO"}, f"Created {created[0].name}")
        return {"FINISHED"}


class SPLATSKETCH_OT_check_backend(bpy.types.Operator):
    """Run the backend Python and report torch, CUDA, gsplat and open_clip, or what is missing"""

    bl_idname = "splatsketch.check_backend"
    bl_label = "Check Backend"
    bl_options = {"INTERNAL"}

    _thread = None
    _timer = None

    def _python(self, context) -> str:
        return backend_python(context)

    def _report(self, context, found) -> set[str]:
        from .backend_setup import show_clip_state

        info, clip = found
        state = context.window_manager.splatsketch
        state.backend_error = isinstance(info, str)
        state.backend_report = info if state.backend_error else describe_backend(info)
        if clip is not None:
            show_clip_state(state, clip)
        self.report({"ERROR"} if state.backend_error else {"INFO"}, state.backend_report)
        from .driver import redraw

        redraw(context)  # the Preferences box and every sidebar
        return {"CANCELLED"} if state.backend_error else {"FINISHED"}

    @staticmethod
    def _check(python: str, clip: dict, user_dir: str):
        """The managed environment whole? The backend's packages, then (when it has them) whether
        the CLIP weights are here. No bpy: it runs on a thread."""
        from ..jobs.clip_fetch_run import clip_weights_status
        from ..jobs.environment import check_managed, managed_env

        managed = managed_env(user_dir)
        problem = check_managed(user_dir) if managed and managed["python"] == python else ""
        if problem:
            return problem, None
        info = probe_backend(python, full=True)
        return info, (None if isinstance(info, str) or not info.get("open_clip") else clip_weights_status(python, clip))

    def execute(self, context):
        from ..preferences import clip_settings, get_preferences, user_dir

        return self._report(context, self._check(self._python(context), clip_settings(get_preferences(context)),
                                                 user_dir()))

    def invoke(self, context, _event):
        """Importing torch takes seconds: probe in a thread so the preferences stay responsive."""
        from ..preferences import clip_settings, get_preferences, user_dir

        self._result = []
        python, clip, folder = self._python(context), clip_settings(get_preferences(context)), user_dir()
        self._thread = threading.Thread(target=lambda: self._result.append(self._check(python, clip, folder)),
                                        daemon=True)
        self._thread.start()
        context.window_manager.splatsketch.backend_report = f"Checking {python} ..."
        self._timer = context.window_manager.event_timer_add(0.2, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER" or self._thread.is_alive():
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        return self._report(context, self._result[0])


class SPLATSKETCH_OT_apply_preset(bpy.types.Operator):
    """Set the Sketch settings to a preset: Preview (fast on a laptop CPU) or Final (CLIPasso-level, GPU)"""

    bl_idname = "splatsketch.apply_preset"
    bl_label = "Apply Preset"
    bl_options = {"REGISTER", "UNDO"}

    preset: bpy.props.EnumProperty(items=[("preview", "Preview", "Geometry-only, 300 iterations: minutes on a CPU"),
                                          ("final", "Final", "CLIP + geometry, 2000 iterations: for a GPU")])

    def execute(self, context):
        from ..settings_map import preset_to_props

        preset_to_props(self.preset, context.scene.splatsketch)
        self.report({"INFO"}, f"SplatSketch: {self.preset.title()} preset")
        return {"FINISHED"}


CLASSES = (SPLATSKETCH_OT_select_result, SPLATSKETCH_OT_convert_grease_pencil, SPLATSKETCH_OT_check_backend,
           SPLATSKETCH_OT_apply_preset)
