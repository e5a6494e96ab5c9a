"""CIFAR-10 ablation series and final model of ntoylker/Neural-Networks-and-Deep-Learning-Course
(seed-models.md §3.4-§3.5).

Common to all: `train_test_split(test_size=0.2, random_state=42)` of the 50,000 training images
(40k train / 10k val; the official 10k test set), sparse labels, Adam (lr 1e-3), batch 32, no
callbacks (EarlyStopping and ModelCheckpoint are defined in the notebooks but commented out of
`fit`), 15 epochs (variant a: 30).

The final model trains in three stages (STAGES), each continuing the previous stage's weights:
40 epochs, then 20 more, then 50 with ImageDataGenerator augmentation (the report says that run
stopped at epoch 20 when the laptop crashed). `visionzoo reproduce --models cifar10_final` runs
them in order; by hand, pass the previous run's checkpoint:

    visionzoo train cifar10_final --data-dir D --set model_options.weights=RUN/best_model.keras \\
        --epochs 50 --set augmentation=cifar_shift_flip
"""

from visionzoo.preprocessing import ImageSpec

from ..data.cifar import CIFAR10_CLASSES
from ..models.source_facts import CIFAR_ABLATION_PARAMETERS
from ..recipe import Builder, Recipe
from ..tasks import Classification

FAMILY = "CIFAR-10 ablation series (ntoylker/Neural-Networks-and-Deep-Learning-Course)"
SPLIT = {"validation": "shuffle:0.2:42", "class_names": CIFAR10_CLASSES}
COMMON = {
    "family": FAMILY, "task": Classification(), "image_spec": ImageSpec(32, 32, "rgb"),
    "data_formats": ("cifar_pickle", "image_folders"), "optimizer": {"name": "adam", "learning_rate": 1e-3},
    "num_classes_option": ("num_classes", "label"), "data_options": SPLIT,
}
# variant -> (summary, reported test accuracy, reported validation accuracy, epochs)
ABLATIONS = {
    "base": ("baseline Conv16 3x3 -> MP2 -> Dense 32", 0.5959, 0.5935, 15),
    "a": ("baseline with 32 filters", 0.5719, 0.5684, 30),
    "b": ("baseline with a 7x7 kernel", 0.6067, 0.6122, 15),
    "c": ("baseline with strides 2", 0.5889, 0.5880, 15),
    "d": ("baseline with padding same", 0.6037, 0.6085, 15),
    "e": ("Conv32 -> MP -> Conv64 -> MP", 0.6837, 0.6778, 15),
    "f": ("Conv32 -> MP -> Conv32 -> MP", 0.6356, 0.6269, 15),
    "g": ("Conv32 with 3x3 max pooling", 0.5976, 0.5968, 15),
    "h": ("Conv32 -> BatchNorm -> MP", 0.5496, 0.5537, 15),
    "i": ("Conv32 with Dense 64", 0.6256, 0.6323, 15),
    "j": ("Conv32, Dropout 0.5 before Dense 32", 0.6467, 0.6458, 15),
    "k": ("Conv32 -> MP -> Conv64 -> MP -> Conv128 same -> MP", 0.7000, 0.6979, 15),
    "l": ("Conv32 -> MP -> Conv64 -> MP -> Conv64 same -> MP", 0.7022, 0.6976, 15),
}
EARLY_STOP_4 = {"type": "early_stopping", "monitor": "val_loss", "patience": 4, "restore_best_weights": True}
# The final model's schedule: overrides per stage; stages 2 and 3 start from the previous checkpoint.
STAGES = (
    {"epochs": 40},
    {"epochs": 20},
    {"epochs": 50, "augmentation": "cifar_shift_flip"},
)


def _ablation(variant: str) -> Recipe:
    summary, test_accuracy, val_accuracy, epochs = ABLATIONS[variant]
    name = f"cifar10_ablation_{variant}"
    return Recipe(
        name=name, summary=f"ablation {variant}: {summary} ({CIFAR_ABLATION_PARAMETERS[variant]:,} parameters)",
        source="seed-models.md §3.4", reported=f"test accuracy {test_accuracy:.4f} (val {val_accuracy:.4f}) after {epochs} epochs",
        builder=Builder("cifar_ablation", "build_cifar_ablation"), model_options={"variant": variant}, epochs=epochs, batch_size=32,
        **COMMON,
    )


RECIPES = {f"cifar10_ablation_{variant}": _ablation(variant) for variant in ABLATIONS}
RECIPES["cifar10_final"] = Recipe(
    name="cifar10_final",
    summary="final model: 3 conv-BN blocks (16, 64, 128) + Dense 256; stages 40 + 20 + 50 (augmented) epochs",
    source="seed-models.md §3.5",
    reported="report only (notebook has no outputs): test accuracy 0.7951, val 0.8014, test loss 0.5947",
    builder=Builder("cifar_ablation", "build_cifar10_final"), model_options={"weights": None}, callbacks=(EARLY_STOP_4,),
    epochs=STAGES[0]["epochs"], batch_size=64, **COMMON,
)
