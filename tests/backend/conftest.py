"""Shared fixtures of the backend tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"


@pytest.fixture
def tiny_clip_config() -> Path:
    """JSON config of a tiny random-weight ModifiedResNet CLIP (load as model 'tiny-rn')."""
    return ASSETS / "tiny_clip_rn.json"


@pytest.fixture
def tiny_clip_vit_config() -> Path:
    """JSON config of a tiny random-weight ViT CLIP (load as model 'tiny-vit')."""
    return ASSETS / "tiny_clip_vit.json"
