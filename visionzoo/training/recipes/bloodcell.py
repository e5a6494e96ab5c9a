"""Blood-cell recipe (GiorCocc/Deep-Learning-Uni-Projects, seed-models.md §6)."""

from visionzoo.preprocessing import ImageSpec

from ..gradcam import Explanation
from ..models.source_facts import BLOODCELL_FINE_TUNE_FROM
from ..recipe import Builder, Recipe
from ..tasks import Classification

RECIPES = {
    "bloodcell_mobilenetv3": Recipe(
        name="bloodcell_mobilenetv3", family="Blood cells (GiorCocc/Deep-Learning-Uni-Projects)",
        summary="MobileNetV3Large + squeeze-excitation head, 8 blood-cell classes at 96x96; the served classifier",
        source="seed-models.md §6", reported="97.40% test accuracy (97.59% val) on AN2DL with ImageNet weights",
        builder=Builder("bloodcell", "build_bloodcell_mobilenetv3"), task=Classification(), image_spec=ImageSpec(96, 96, "rgb"),
        data_formats=("blood_pbc", "blood_npz"), num_classes_option=("num_classes", "label"),
        model_options={"weights": "imagenet", "fine_tune_from": BLOODCELL_FINE_TUNE_FROM},
        optimizer={"name": "adam", "learning_rate": 1e-3},
        callbacks=(
            {"type": "early_stopping", "monitor": "val_accuracy", "mode": "max", "patience": 10, "restore_best_weights": True},
            {"type": "reduce_lr", "monitor": "val_loss", "factor": 0.5, "patience": 5, "min_lr": 1e-6},
        ),
        epochs=500, batch_size=64, augmentation="bloodcell_source", class_weight="balanced", served=True,
        explain=Explanation("pool", "probabilities"),
    ),
}
