"""What the add-on shows about CLIP weights before any backend runs: the models' download sizes."""

from __future__ import annotations

# Approximate download sizes (MB) of the models users pick, for the button's label.
KNOWN_SIZES_MB = {"RN50": 244, "RN101": 278, "ViT-B-32": 338, "ViT-B-16": 335, "ViT-L-14": 890}


def approx_size_mb(model: str) -> int | None:
    return KNOWN_SIZES_MB.get(model.replace("-quickgelu", ""))
