"""Presets: every one validates as job settings, user settings win, unknown names fail clearly."""

from __future__ import annotations

import pytest

from contract.presets import PRESETS, apply_preset
from contract.settings import CLIP_LOSSES, settings_from_dict


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates(name):
    cfg = settings_from_dict(apply_preset(name, {}))
    assert cfg.iterations > 0 and cfg.curves > 0


def test_preview_needs_no_clip_and_final_is_clipasso_level():
    preview = settings_from_dict(apply_preset("preview"))
    assert not preview.uses_clip()
    final = settings_from_dict(apply_preset("final"))
    assert all(final.losses[name] > 0 for name in CLIP_LOSSES)
    assert final.clip.model == "RN101-quickgelu"
    assert (final.iterations, final.views_per_step, final.augmentations) == (2000, 8, 4)


def test_user_settings_override_and_clip_merges():
    out = apply_preset("final", {"iterations": 50, "clip": {"checkpoint": "/x/RN101.pt"}})
    cfg = settings_from_dict(out)
    assert cfg.iterations == 50
    assert cfg.clip.model == "RN101-quickgelu" and cfg.clip.checkpoint == "/x/RN101.pt"
    assert PRESETS["final"]["iterations"] == 2000  # the preset itself is untouched
    assert "checkpoint" not in PRESETS["final"]["clip"]


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown preset 'fast'.*final.*preview"):
        apply_preset("fast", {})
