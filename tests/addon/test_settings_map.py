"""The panel, its preset buttons and the headless command read one table (settings_map.py): a preset
applied in the panel must give the same job settings as ``--preset`` on the command line."""

import bpy
import pytest

pytestmark = pytest.mark.usefixtures("addon")


def _same(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{path or 'settings'}: keys differ: {sorted(set(a) ^ set(b))}"
        for key in a:
            _same(a[key], b[key], f"{path}.{key}" if path else key)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6), f"{path}: panel {a!r} vs CLI {b!r}"
    else:
        assert a == b, f"{path}: panel {a!r} vs CLI {b!r}"


@pytest.mark.parametrize("preset", ["preview", "final"])
def test_panel_preset_equals_cli_preset_key_by_key(addon, preset):
    props = bpy.context.scene.splatsketch
    props.w_repulsion, props.hard_views = 2.5, 6.0  # a user's own choices, which the preset replaces
    args = addon.cli.build_parser().parse_args(["--preset", preset])
    cli_settings, cli_params = addon.cli._settings(args, bpy.context)
    assert bpy.ops.splatsketch.apply_preset(preset=preset) == {"FINISHED"}
    prefs = addon.preferences.get_preferences()
    panel = addon.properties.settings_dict(props, prefs)
    _same(panel, cli_settings)
    assert addon.properties.job_params(props) == cli_params


def test_every_flag_of_the_table_reaches_the_settings(addon):
    table = addon.settings_map
    argv, expected = [], {}
    for field in table.FIELDS:
        if not field.flag:
            continue
        if field.kind is bool:  # --reseed / --no-reseed: the opposite of the default, so it shows
            value = not getattr(addon.contract.settings.OptimizeConfig(), field.setting)
            argv.append(field.flag if value else "--no-" + field.flag[2:])
            expected[field.setting] = value
            continue
        value = field.choices[-1] if field.choices else {int: 7, float: 0.25, str: "a chair"}[field.kind]
        if field.prop == "image_size":
            value = 64
        argv += [field.flag, str(value)]
        expected[field.setting] = value
    settings, params = addon.cli._settings(addon.cli.build_parser().parse_args(argv), bpy.context)
    for key, value in expected.items():
        got = params[key[4:]] if key.startswith("job.") else settings[key]
        assert got == value, key
