"""Model families and what they cannot do (torch-free: space validation reads it without importing timm).

A family is the class name timm builds (`type(model).__name__`). Token families hold a class token ahead of their
patch tokens: their CAMs need the tokens reshaped to a grid (`trainer.models.cam_target`).
"""

from __future__ import annotations

TOKEN_FAMILIES = ("VisionTransformer", "Deit", "Eva", "Beit")
TRANSFORMERS = (*TOKEN_FAMILIES, "SwinTransformer")
# method -> (families it cannot run on, why)
CAM_UNSUITABLE = {
    "fullgrad": (TRANSFORMERS, "has no 2D conv/batch-norm biases, which FullGrad reads"),
    "shapleycam": (TRANSFORMERS, "uses fused attention, which has no second derivative (ShapleyCAM needs one)"),
}
