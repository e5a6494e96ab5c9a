"""Mars segmentation recipes (GiorCocc/Deep-Learning-Uni-Projects, seed-models.md §7)."""

from visionzoo.preprocessing import ImageSpec

from ..recipe import Builder, Recipe
from ..tasks import Segmentation

FAMILY = "Mars terrain (GiorCocc/Deep-Learning-Uni-Projects)"
TILE = ImageSpec(64, 128, "grayscale", resize_method="bilinear", tiling="rows")
COMMON = {
    "family": FAMILY, "task": Segmentation(), "image_spec": TILE, "data_formats": ("mars_npz", "ai4mars"),
    "optimizer": {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-6},
    "callbacks": (
        {"type": "early_stopping", "monitor": "val_mean_iou", "mode": "max", "patience": 20, "restore_best_weights": True},
        {"type": "reduce_lr", "monitor": "val_loss", "factor": 0.1, "patience": 5, "min_lr": 1e-7},
    ),
    "batch_size": 64, "augmentation": "mars", "balance_classes": True,
}

RECIPES = {
    "mars_dual_unet": Recipe(
        name="mars_dual_unet",
        summary="EnhancedDualScaleUNet: macro + micro residual U-Nets with attention fusion; the served segmenter",
        source="seed-models.md §7.3", reported="0.5128 val mean IoU (background excluded) on AN2DL; Kaggle 0.52828",
        builder=Builder("mars_unet", "build_mars_dual_unet"), epochs=500, served=True, **COMMON,
    ),
    "mars_bigrock_unet": Recipe(
        name="mars_bigrock_unet", summary="big-rock specialist U-Net (LayerNorm blocks, inception/SE/context bottleneck)",
        source="seed-models.md §7.4", reported="0.7474 val mean IoU on its own synthetic split; 0.003 big-rock IoU on real val",
        builder=Builder("mars_unet", "build_mars_bigrock_unet"), epochs=100, **COMMON,
    ),
    "mars_ensemble": Recipe(
        name="mars_ensemble", summary="0.7 x dual U-Net + 0.3 x big-rock U-Net probabilities, trained end to end",
        source="seed-models.md §7.5", reported="0.5272 val mean IoU",
        builder=Builder("mars_unet", "build_mars_ensemble"), epochs=500, **COMMON,
    ),
}
