"""The custom properties SplatSketch keeps on the objects it makes: one name each, read and written
only through these constants, so a sketch made by one version is read by the next."""

# on a sketch object
SOURCE = "splatsketch_source"  # the mesh object's name it was drawn from
CAPTURE = "splatsketch_capture"  # or the capture's transforms json (a sketch from pictures) ...
MASKS = "splatsketch_masks"  # ... its mask folder ("" for none)
CENTER = "splatsketch_center"  # ... and the normalised space the capture's hull gave
RADIUS = "splatsketch_radius"
SETTINGS = "splatsketch_settings"  # the job's settings (JSON)
METRICS = "splatsketch_metrics"  # the run's result.json (JSON)
SEED = "splatsketch_seed"
SECONDS = "splatsketch_seconds"
WIDTH = "splatsketch_width"  # the run's stroke width, which the styles' widths are factors of
EVALUATION = "splatsketch_evaluation"  # the last Evaluate's figures (JSON)
PICTURES = {"report": "splatsketch_report", "turntable": "splatsketch_turntable"}  # the last Evaluate's files
STROKES_SHOWN = "splatsketch_strokes_shown"  # the Strokes Shown slider (an RNA property, properties.py)
# on a spline's points: each stroke's place in the order of importance
RANK = "splatsketch_rank"
# on collections SplatSketch made (remove_sketch may delete them), on its node group (its version)
CREATED = "splatsketch_created"
GROUP_VERSION = "splatsketch_version"
