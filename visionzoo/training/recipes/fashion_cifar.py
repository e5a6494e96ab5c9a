"""Fashion-MNIST and CIFAR-10 recipes of jasproudis/deep-learning-assignment (seed-models.md
§2.1, §2.2, §3.1-§3.3): Adam (Keras default lr 1e-3), sparse cross-entropy, batch 128.

Validation follows each notebook: `validation_split=0.1` (Keras takes the *last* 10% of the
training arrays, unshuffled) or an explicit "last 5000" slice; both need the official training
order, which the loaders restore (visionzoo/training/data/idx.py, cifar.py).
"""

from visionzoo.preprocessing import ImageSpec

from ..data.cifar import CIFAR10_CLASSES
from ..data.idx import FASHION_MNIST_CLASSES
from ..recipe import Builder, Recipe
from ..tasks import Classification

FAMILY = "Fashion-MNIST and CIFAR-10 baselines (jasproudis/deep-learning-assignment)"
GREY_28 = ImageSpec(28, 28, "grayscale")
RGB_32 = ImageSpec(32, 32, "rgb")
FASHION = {"data_formats": ("idx", "image_folders"), "image_spec": GREY_28}
CIFAR = {"data_formats": ("cifar_pickle", "image_folders"), "image_spec": RGB_32}
ADAM = {"name": "adam", "learning_rate": 1e-3}
EARLY_STOP_3 = ({"type": "early_stopping", "monitor": "val_loss", "patience": 3, "restore_best_weights": True},)
COMMON = {"family": FAMILY, "task": Classification(), "optimizer": ADAM, "batch_size": 128,
          "num_classes_option": ("num_classes", "label")}


def _data(validation: str, class_names: list[str]) -> dict:
    return {"validation": validation, "class_names": class_names}


RECIPES = {
    "fashion_mnist_mlp": Recipe(
        name="fashion_mnist_mlp", summary="MLP 784-256-128-10, Dropout 0.3, 15 epochs, no callbacks",
        source="seed-models.md §2.1", reported="test accuracy 0.8871 (val 0.8903); a later run 0.8840",
        builder=Builder("fashion_cifar", "build_mlp"), model_options={"hidden_units": [256, 128], "dropout_rate": 0.3},
        data_options=_data("fraction:0.1", FASHION_MNIST_CLASSES), epochs=15, **FASHION, **COMMON,
    ),
    "fashion_mnist_cnn": Recipe(
        name="fashion_mnist_cnn", summary="2 conv blocks (32, 64) + BN + Dropout, Dense 128; early stopping",
        source="seed-models.md §2.2", reported="test accuracy 0.9184, loss 0.2355 (stopped after 14 epochs)",
        builder=Builder("fashion_cifar", "build_fashion_mnist_cnn"), callbacks=EARLY_STOP_3,
        data_options=_data("last:5000", FASHION_MNIST_CLASSES), epochs=15, **FASHION, **COMMON,
    ),
    "cifar10_mlp": Recipe(
        name="cifar10_mlp", summary="MLP 3072-512-256-10, Dropout 0.5; early stopping",
        source="seed-models.md §3.1", reported="test accuracy 0.3566, loss 1.8690 (stopped after 11 epochs)",
        builder=Builder("fashion_cifar", "build_mlp"), model_options={"hidden_units": [512, 256], "dropout_rate": 0.5},
        callbacks=EARLY_STOP_3, data_options=_data("last:5000", CIFAR10_CLASSES), epochs=15, **CIFAR, **COMMON,
    ),
    "cifar10_cnn": Recipe(
        name="cifar10_cnn", summary="simple CNN Conv32-MP-Conv64-MP-Conv64, Dense 64; 15 epochs, no callbacks",
        source="seed-models.md §3.2", reported="test accuracy 0.6987 (val 0.7138)",
        builder=Builder("fashion_cifar", "build_cifar10_cnn"), data_options=_data("fraction:0.1", CIFAR10_CLASSES), epochs=15,
        **CIFAR, **COMMON,
    ),
    "cifar10_cnn2": Recipe(
        name="cifar10_cnn2", summary="CNN2: 3 conv blocks (32, 64, 128) + BN + Dropout, Dense 256; early stopping",
        source="seed-models.md §3.3", reported="test accuracy 0.8149 (23 epochs); a Colab rerun 0.7855 (17 epochs)",
        builder=Builder("fashion_cifar", "build_cifar10_cnn2"), callbacks=EARLY_STOP_3,
        data_options=_data("fraction:0.1", CIFAR10_CLASSES), epochs=50, **CIFAR, **COMMON,
    ),
}
