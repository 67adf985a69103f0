"""How a sketch's strokes are drawn: one Geometry Nodes modifier on the curve object.

The splines stay the artist's editable Bézier curves; the modifier makes the tubes from them. Its
inputs are the artist's controls, each live and keyable like any modifier input:

- **Stroke Limit** (the panel's Strokes Shown): only the first N splines are drawn, 0 draws them all.
  Strokes are stored most important first, so dragging it from 16 to 4 shows the sketch at 12, 8, 4
  strokes without a new run.
- **Width** (scene units), **Taper** (the share of each end that narrows to a pen's point) and
  **Importance Weight** (later, less important strokes drawn thinner): the stroke's weight.
- **Drawn** (0-1), **Overlap** and **Sweep**: how much of the sketch is drawn, stroke after stroke in
  order of importance (or along the Sweep direction); Animate Drawing keys Drawn over a frame range
  (plain F-curve keys, Graph Editor).

Why a modifier rather than the curve's own bevel: a curve's bevel is applied before any modifier,
so nothing after it could still tell one stroke from another. The curve's bevel is 0 while the
modifier draws; without the modifier (deleted by hand) the splines are bare, as for any curve.
"""

from __future__ import annotations

import bpy

from . import id_keys

GROUP_NAME = "SplatSketch Strokes"
MODIFIER_NAME = "SplatSketch Strokes"
GROUP_VERSION = 1  # stored on the node group: a file made by an older layout gets a rebuilt group
PROFILE_RESOLUTION = 12  # sides of the tube (the curve bevel's resolution 3 gave 12 too)
SAMPLES_PER_STROKE = 64  # points a stroke is resampled to, so a taper is smooth along it
TIP = 0.15  # a tapered end's width, as a share of the stroke's
LIGHTEST = 0.4  # with Importance Weight 1, the last stroke's width as a share of the first's
ALL_STROKES = 0  # Stroke Limit meaning "every stroke", however many are drawn in later

# (name, socket type, default, min, max, description): the modifier's inputs, in the panel's order
INPUTS = (
    ("Stroke Limit", "NodeSocketInt", ALL_STROKES, 0, 100000,
     "Draw only the first N strokes (most important first); 0 draws every stroke"),
    ("Width", "NodeSocketFloat", 0.01, 0.0, 1e6, "Stroke radius in scene units"),
    ("Taper", "NodeSocketFloat", 0.0, 0.0, 0.5, "Share of each end that narrows to a point: 0 draws even "
                                                "tubes, 0.3 a pen's swelling line"),
    ("Importance Weight", "NodeSocketFloat", 0.0, 0.0, 1.0, "Less important strokes are drawn thinner: "
                                                            "at 1 the last is 40% of the first's width"),
    ("Material", "NodeSocketMaterial", None, None, None, "The strokes' material (the run's black ink)"),
    ("Drawn", "NodeSocketFloat", 1.0, 0.0, 1.0, "How much of the sketch is drawn, stroke after stroke in "
                                                "order of importance (keyed by Animate Drawing)"),
    ("Overlap", "NodeSocketFloat", 0.3, 0.0, 1.0, "How far a stroke's drawing overlaps the next one's: 0 "
                                                  "one after the other, 1 all at once"),
    ("Sweep", "NodeSocketVector", (0.0, 0.0, 0.0), None, None,
     "Draw the strokes in order along this direction (0, 0, 1: bottom to top); zero: in order of "
     "importance"),
)
SWEEPS = {"IMPORTANCE": (0.0, 0.0, 0.0), "BOTTOM_TO_TOP": (0.0, 0.0, 1.0), "LEFT_TO_RIGHT": (1.0, 0.0, 0.0),
          "FRONT_TO_BACK": (0.0, 1.0, 0.0)}
RANK = id_keys.RANK  # each stroke's place in the order of importance, kept while drawing in another

STYLES = {  # name: (Taper, Importance Weight, width factor against the run's stroke width)
    "UNIFORM": (0.0, 0.0, 1.0),
    "PEN": (0.3, 0.5, 1.0),
    "MARKER": (0.08, 0.0, 1.6),
}


class _Builder:
    """Node helper: ``node(type, inputs={index or name: value or socket}, **properties)``."""

    def __init__(self, tree):
        self.tree = tree

    def node(self, kind: str, inputs: dict | None = None, **properties):
        node = self.tree.nodes.new(kind)
        for key, value in properties.items():
            setattr(node, key, value)
        for key, value in (inputs or {}).items():
            socket = node.inputs[key]
            if isinstance(value, bpy.types.NodeSocket):
                self.tree.links.new(value, socket)
            else:
                socket.default_value = value
        return node

    def math(self, operation: str, a, b=None, clamp: bool = False):
        inputs = {0: a} if b is None else {0: a, 1: b}
        return self.node("ShaderNodeMath", inputs, operation=operation, use_clamp=clamp).outputs[0]


def _build(tree) -> None:
    """The node tree: drop hidden strokes, trim each to its share of Drawn, resample, set the radius
    (taper x importance x the points' own radius), sweep a circle of radius Width along it, shade
    smooth, ink."""
    tree.nodes.clear()
    b = _Builder(tree)
    group_in, group_out = b.node("NodeGroupInput"), b.node("NodeGroupOutput")
    put = group_in.outputs
    index = b.node("GeometryNodeInputIndex").outputs[0]

    beyond = b.node("FunctionNodeCompare", {2: index, 3: put["Stroke Limit"]}, data_type="INT",
                    operation="GREATER_EQUAL").outputs[0]
    limited = b.node("FunctionNodeCompare", {2: put["Stroke Limit"], 3: 0}, data_type="INT",
                     operation="GREATER_THAN").outputs[0]
    hidden = b.node("FunctionNodeBooleanMath", {0: beyond, 1: limited}, operation="AND").outputs[0]
    shown = b.node("GeometryNodeDeleteGeometry", {0: put["Geometry"], 1: hidden}, domain="CURVE").outputs[0]
    ranked = b.node("GeometryNodeStoreNamedAttribute", {0: shown, "Name": RANK, "Value": index},
                    data_type="INT", domain="CURVE").outputs[0]
    # the drawing's order: importance (as stored), or along the Sweep direction by each stroke's centre
    centre = b.node("GeometryNodeFieldOnDomain", {0: b.node("GeometryNodeInputPosition").outputs[0]},
                    domain="CURVE", data_type="FLOAT_VECTOR").outputs[0]
    along_sweep = b.node("ShaderNodeVectorMath", {0: centre, 1: put["Sweep"]}, operation="DOT_PRODUCT").outputs["Value"]
    sweeping = b.node("FunctionNodeCompare", {0: b.node("ShaderNodeVectorMath", {0: put["Sweep"]},
                                                          operation="LENGTH").outputs["Value"], 1: 0.0},
                      data_type="FLOAT", operation="GREATER_THAN").outputs[0]
    key = b.node("GeometryNodeSwitch", {0: sweeping, 1: b.math("ADD", index, 0.0), 2: along_sweep},
                 input_type="FLOAT").outputs[0]
    shown = b.node("GeometryNodeSortElements", {0: ranked, "Sort Weight": key}, domain="CURVE").outputs[0]
    count = b.node("GeometryNodeAttributeDomainSize", {0: shown}, component="CURVE").outputs["Spline Count"]

    # stroke i draws over [i*step, i*step + d] of Drawn: d = 1 / (1 + (n-1)(1-overlap)), step = d(1-overlap)
    spacing = b.math("SUBTRACT", 1.0, put["Overlap"])
    d = b.math("DIVIDE", 1.0, b.math("ADD", 1.0, b.math("MULTIPLY", b.math("SUBTRACT", count, 1.0), spacing)))
    start = b.math("MULTIPLY", index, b.math("MULTIPLY", d, spacing))
    share = b.math("DIVIDE", b.math("SUBTRACT", put["Drawn"], start), d, clamp=True)
    not_started = b.node("FunctionNodeCompare", {0: share, 1: 1e-4}, data_type="FLOAT",
                         operation="LESS_THAN").outputs[0]
    started = b.node("GeometryNodeDeleteGeometry", {0: shown, 1: not_started}, domain="CURVE").outputs[0]
    trimmed = b.node("GeometryNodeTrimCurve", {0: started, 3: share}, mode="FACTOR").outputs[0]
    smooth = b.node("GeometryNodeResampleCurve", {0: trimmed, "Count": SAMPLES_PER_STROKE}).outputs[0]

    along = b.node("GeometryNodeSplineParameter").outputs["Factor"]
    from_end = b.math("MINIMUM", along, b.math("SUBTRACT", 1.0, along))
    tapered = b.node("ShaderNodeMapRange", {"Value": from_end, "From Min": 0.0,
                                            "From Max": b.math("MAXIMUM", put["Taper"], 1e-4),
                                            "To Min": TIP, "To Max": 1.0},
                     interpolation_type="SMOOTHSTEP", clamp=True).outputs[0]
    use_taper = b.node("FunctionNodeCompare", {0: put["Taper"], 1: 0.0}, data_type="FLOAT",
                       operation="GREATER_THAN").outputs[0]
    taper = b.node("GeometryNodeSwitch", {0: use_taper, 1: 1.0, 2: tapered}, input_type="FLOAT").outputs[0]
    stroke = b.node("GeometryNodeInputNamedAttribute", {"Name": RANK}, data_type="INT").outputs[0]
    rank = b.math("DIVIDE", stroke, b.math("MAXIMUM", b.math("SUBTRACT", count, 1.0), 1.0))
    weight = b.math("SUBTRACT", 1.0, b.math("MULTIPLY", b.math("MULTIPLY", rank, put["Importance Weight"]),
                                            1.0 - LIGHTEST))
    # times the points' own radius (Alt+S in Edit Mode), as a curve's bevel would
    own = b.node("GeometryNodeInputRadius").outputs[0]
    scale = b.math("MULTIPLY", b.math("MULTIPLY", taper, weight), own)
    profile = b.node("GeometryNodeCurvePrimitiveCircle", {"Resolution": PROFILE_RESOLUTION,
                                                          "Radius": put["Width"]}, mode="RADIUS").outputs[0]
    tube = b.node("GeometryNodeCurveToMesh", {1: profile, "Fill Caps": True})
    if "Scale" in tube.inputs:  # Blender 4.3+: the profile's scale along the curve is an input
        tree.links.new(smooth, tube.inputs[0])
        tree.links.new(scale, tube.inputs["Scale"])
    else:  # 4.2: the curve's radius scales the profile
        tree.links.new(b.node("GeometryNodeSetCurveRadius", {0: smooth, "Radius": scale}).outputs[0], tube.inputs[0])
    tube = tube.outputs[0]
    shaded = b.node("GeometryNodeSetShadeSmooth", {0: tube}).outputs[0]
    # Blender 4.2-4.3 drop the curve's own material list on the way through the modifier
    shaded = b.node("GeometryNodeSetMaterial", {0: shaded, 2: put["Material"]}).outputs[0]
    tree.links.new(shaded, group_out.inputs[0])
    _arrange(tree)


def _arrange(tree) -> None:
    """Columns by distance from the group's input, so the tree reads left to right when opened."""
    depth = {node: 0 for node in tree.nodes}
    for _ in range(len(tree.nodes)):
        changed = False
        for link in tree.links:
            if depth[link.to_node] < depth[link.from_node] + 1:
                depth[link.to_node], changed = depth[link.from_node] + 1, True
        if not changed:
            break
    rows: dict[int, int] = {}
    for node in tree.nodes:
        column = depth[node]
        node.location = (220.0 * column, -170.0 * rows.get(column, 0))
        rows[column] = rows.get(column, 0) + 1


def _complete(tree) -> bool:
    """Whether ``tree`` is this layout's group with every input the add-on sets."""
    names = {item.name for item in tree.interface.items_tree if getattr(item, "in_out", "") == "INPUT"}
    return tree.get(id_keys.GROUP_VERSION) == GROUP_VERSION and all(spec[0] in names for spec in INPUTS)


def style_group():
    """The shared node group, built on first use; rebuilt when it is from another layout or an input
    the add-on sets is gone (the modifiers keep using it, their inputs back at the defaults)."""
    tree = bpy.data.node_groups.get(GROUP_NAME)
    if tree is not None and tree.bl_idname == "GeometryNodeTree" and _complete(tree):
        return tree
    if tree is None or tree.bl_idname != "GeometryNodeTree":
        tree = bpy.data.node_groups.new(GROUP_NAME, "GeometryNodeTree")
    tree.interface.clear()
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    for name, kind, default, low, high, description in INPUTS:
        socket = tree.interface.new_socket(name, in_out="INPUT", socket_type=kind)
        if low is not None:
            socket.min_value, socket.max_value = low, high
        if default is not None:
            socket.default_value = default
        socket.description = description
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    _build(tree)
    tree[id_keys.GROUP_VERSION] = GROUP_VERSION
    return tree


def style_modifier(obj):
    """The sketch's strokes modifier, or None (a bare curve, or one whose modifier was removed)."""
    for modifier in getattr(obj, "modifiers", ()):
        if modifier.type == "NODES" and modifier.node_group is not None and \
                modifier.node_group.name.startswith(GROUP_NAME):
            return modifier
    return None


def _identifier(modifier, name: str) -> str:
    for item in modifier.node_group.interface.items_tree:
        if getattr(item, "in_out", "") == "INPUT" and item.name == name:
            return item.identifier
    raise KeyError(name)


def input_path(modifier, name: str) -> str:
    """The input's RNA path relative to the modifier (``'["Socket_2"]'``): for ``layout.prop`` and keys."""
    return f'["{_identifier(modifier, name)}"]'


def get_input(obj, name: str):
    """The modifier's input ``name``, or None (no modifier, or a group without that input)."""
    modifier = style_modifier(obj)
    try:
        return None if modifier is None else modifier[_identifier(modifier, name)]
    except KeyError:
        return None


def set_input(obj, name: str, value) -> None:
    modifier = style_modifier(obj)
    try:
        identifier = _identifier(modifier, name)
    except KeyError:  # a group of another layout, or one edited by hand: the complete one again
        modifier.node_group = style_group()
        _reset_inputs(obj, modifier)
        identifier = _identifier(modifier, name)
    modifier[identifier] = value
    obj.update_tag()


def _reset_inputs(obj, modifier) -> None:
    """Every input at its default, the sketch's own width and ink (after the group was rebuilt)."""
    for name, _, default, _, _, _ in INPUTS:
        if default is not None:
            modifier[_identifier(modifier, name)] = default
    modifier[_identifier(modifier, "Width")] = float(obj.get(id_keys.WIDTH, obj.data.bevel_depth) or 0.01)
    modifier[_identifier(modifier, "Material")] = obj.data.materials[0] if len(obj.data.materials) else None


def add_style(obj, width: float):
    """Give a sketch curve object its strokes modifier: all strokes shown, tubes of radius ``width``."""
    modifier = style_modifier(obj) or obj.modifiers.new(MODIFIER_NAME, "NODES")
    modifier.node_group = style_group()
    obj.data.bevel_depth = 0.0
    set_input(obj, "Width", float(width))
    set_input(obj, "Stroke Limit", ALL_STROKES)
    set_input(obj, "Material", obj.data.materials[0] if len(obj.data.materials) else None)
    obj[id_keys.WIDTH] = float(width)  # the run's width: the styles' widths are factors of it
    return modifier


def base_width(obj) -> float:
    """The width the sketch was made with (scene units)."""
    return float(obj.get(id_keys.WIDTH, stroke_width(obj)))


def apply_style(obj, style: str, base_width: float) -> None:
    """A preset (``STYLES``): taper, importance weight and width as a factor of ``base_width``."""
    taper, weight, factor = STYLES[style]
    set_input(obj, "Taper", taper)
    set_input(obj, "Importance Weight", weight)
    set_input(obj, "Width", base_width * factor)


def stroke_width(obj) -> float:
    """The strokes' radius in scene units (the modifier's Width, else the curve's own bevel)."""
    width = get_input(obj, "Width")
    return float(obj.data.bevel_depth if width is None else width)


def set_stroke_width(obj, width: float) -> None:
    if style_modifier(obj) is None:
        obj.data.bevel_depth = width
    else:
        set_input(obj, "Width", float(width))


def shown_count(obj) -> int:
    """How many splines are drawn: the first Stroke Limit of them (all: limit 0, or no modifier)."""
    limit = get_input(obj, "Stroke Limit")
    total = len(obj.data.splines)
    return total if not limit else max(0, min(int(limit), total))


def drawing_order(obj, splines) -> list[int]:
    """The order the modifier draws ``splines`` in: as they are (importance), or by their points'
    mean along the Sweep direction (object space)."""
    import numpy as np

    sweep = np.asarray(get_input(obj, "Sweep") or (0.0, 0.0, 0.0), dtype=np.float64)
    if not np.any(sweep):
        return list(range(len(splines)))
    keys = [float(np.mean([tuple(p.co) for p in s.bezier_points], axis=0) @ sweep) for s in splines]
    return sorted(range(len(splines)), key=lambda i: keys[i])


def radius_factors(t, rank, count: int, taper: float, weight: float):
    """The modifier's radius factor at parameters ``t`` (0-1 along a stroke) of the stroke ranked
    ``rank`` of ``count``: for copies of the sketch made outside the modifier (Grease Pencil)."""
    import numpy as np

    t = np.asarray(t, dtype=np.float64)
    if taper > 0:
        x = np.clip(np.minimum(t, 1.0 - t) / max(taper, 1e-4), 0.0, 1.0)
        shape = TIP + (1.0 - TIP) * x * x * (3.0 - 2.0 * x)  # smoothstep, as the Map Range node
    else:
        shape = np.ones_like(t)
    return shape * (1.0 - rank / max(count - 1, 1) * weight * (1.0 - LIGHTEST))


# -- drawn-on animation: keys on the modifier's Drawn input ----------------------------------------
def _drawn_path(obj) -> str:
    modifier = style_modifier(obj)
    return f'modifiers["{modifier.name}"]{input_path(modifier, "Drawn")}'


def _fcurves(obj):
    """The object's F-curves (Blender 4.4+ keeps them per action slot; 4.2-4.3 on the action)."""
    animation = obj.animation_data
    if animation is None or animation.action is None:
        return None
    if hasattr(animation, "action_slot"):
        from bpy_extras import anim_utils

        bag = anim_utils.action_get_channelbag_for_slot(animation.action, animation.action_slot)
        return None if bag is None else bag.fcurves
    return animation.action.fcurves


def drawn_fcurve(obj):
    """The F-curve animating Drawn, or None."""
    if style_modifier(obj) is None:
        return None
    fcurves = _fcurves(obj)
    return None if fcurves is None else fcurves.find(_drawn_path(obj))


def drawing_range(obj) -> tuple[float, float] | None:
    """(first, last) keyed frame of the drawn-on animation, or None when it is not animated."""
    fcurve = drawn_fcurve(obj)
    if fcurve is None or len(fcurve.keyframe_points) < 2:
        return None
    frames = [k.co[0] for k in fcurve.keyframe_points]
    return min(frames), max(frames)


def clear_drawing(obj) -> None:
    """Remove the drawn-on keys; the whole sketch is drawn again."""
    fcurve = drawn_fcurve(obj)
    if fcurve is not None:
        _fcurves(obj).remove(fcurve)
    set_input(obj, "Drawn", 1.0)


def animate_drawing(obj, frame_start: int, frame_end: int, overlap: float, easing: str,
                    order: str = "IMPORTANCE") -> None:
    """Key Drawn from 0 at ``frame_start`` to 1 at ``frame_end`` (``easing``: LINEAR, or EASE_IN_OUT
    for a start and end that ease); Overlap as given; strokes in ``order`` (``SWEEPS``). Replaces
    earlier drawn-on keys."""
    if frame_end <= frame_start:
        raise ValueError(f"the drawing needs at least one frame: {frame_start} to {frame_end}")
    clear_drawing(obj)
    set_input(obj, "Overlap", float(overlap))
    set_input(obj, "Sweep", SWEEPS[order])
    path = _drawn_path(obj)
    for frame, value in ((frame_start, 0.0), (frame_end, 1.0)):
        set_input(obj, "Drawn", value)
        obj.keyframe_insert(data_path=path, frame=frame)
    for key in drawn_fcurve(obj).keyframe_points:
        key.interpolation = "LINEAR" if easing == "LINEAR" else "SINE"
        key.easing = "EASE_IN_OUT"
