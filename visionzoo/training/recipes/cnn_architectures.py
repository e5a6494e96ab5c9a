"""Classic CNN architecture recipes of ManasviJaipurkar/Deep-Learning-Study (seed-models.md §1,
§2.3, §3.6-§3.8, §4): the PyTorch 4-conv net, LeNet, LeNet-50, AlexNet, ZFNet, VGG16 and ResNets.

Several sources had no validation split and printed test accuracy every epoch (PyTorch loops,
AlexNet's `validation_data=test`, VGG's test generator); their recipes validate on the test split
("validation": "test"), so the best checkpoint is chosen on test data as the source's readers did.

Source settings the trainer cannot express yet, and what the recipe does instead:
- custom ResNet (CIFAR-100): OneCycleLR(max_lr=1e-3) -> a constant 1e-3 (Adam, clipvalue 0.1);
- 4-conv Fashion-MNIST: ExponentialLR(0.9) was created but never stepped -> constant 1e-3, as ran.
"""

from dataclasses import dataclass

import numpy as np

from visionzoo.preprocessing import ImageSpec

from ..data.cifar import CIFAR10_CLASSES
from ..data.idx import DIGITS, FASHION_MNIST_CLASSES
from ..metrics import classification_scores
from ..models.source_facts import LENET_OUTPUT_UNITS, VGG16_FINE_TUNE_FROM
from ..recipe import Builder, Recipe
from ..tasks import Binary, Classification


@dataclass(frozen=True)
class WideSoftmaxClassification(Classification):
    """A softmax wider than the label set (the LeNet source's 84 units for 10 digits). An arg-max
    on one of the extra units is scored as one more class, "unused output", so it counts as wrong."""

    width: int = LENET_OUTPUT_UNITS

    def score(self, predictions, examples, class_names):
        names = list(class_names[self.target])
        predicted = np.minimum(predictions[self.output].argmax(axis=-1), len(names))
        truth = examples.targets[self.target]
        return classification_scores(truth, predicted, names + [f"unused output ({len(names)}-{self.width - 1})"])

    def output_labels(self, class_names):
        names = list(class_names[self.target])
        return {self.output: names + [f"unused_{i}" for i in range(len(names), self.width)]}


FAMILY = "Classic CNN architectures (ManasviJaipurkar/Deep-Learning-Study)"
GREY_28 = ImageSpec(28, 28, "grayscale")
RGB_32 = ImageSpec(32, 32, "rgb")
MNIST = {"image_spec": GREY_28, "data_formats": ("idx", "image_folders")}
CIFAR = {"image_spec": RGB_32, "data_formats": ("cifar_pickle", "image_folders")}
DOGS = {"image_spec": ImageSpec(150, 150, "rgb"), "data_formats": ("dogs_vs_cats", "image_folders"),
        "task": Binary(target="label", output="probabilities"), "test_input_shape": (32, 32, 3),
        "data_options": {"validation": "test"}, "augmentation": "vgg_zoom_flip", "batch_size": 32, "epochs": 10}
ADAM = {"name": "adam", "learning_rate": 1e-3}
CLASSES = ("num_classes", "label")
COMMON = {"family": FAMILY}


def _classification(**fields) -> Recipe:
    fields.setdefault("task", Classification())
    fields.setdefault("num_classes_option", CLASSES)
    return Recipe(**COMMON, **fields)


RECIPES = {
    "mnist_4conv": _classification(
        name="mnist_4conv", summary="PyTorch 4-conv net (Conv 10/20/40/80, FC 50) ported; softmax once (source: twice)",
        source="seed-models.md §1.1", reported="test 9793/10000 after 50 epochs (best 9805, epoch 36)",
        builder=Builder("four_conv", "build_four_conv"), model_options={"torch_init": True, "source_double_softmax": False},
        data_options={"validation": "test", "class_names": DIGITS}, optimizer=ADAM, epochs=50, batch_size=50, **MNIST,
    ),
    "fashion_mnist_4conv": _classification(
        name="fashion_mnist_4conv", summary="the same 4-conv net on Fashion-MNIST, 10 epochs",
        source="seed-models.md §2.3", reported="test 8057/10000 after 10 epochs",
        builder=Builder("four_conv", "build_four_conv"), model_options={"torch_init": True, "source_double_softmax": False},
        data_options={"validation": "test", "class_names": FASHION_MNIST_CLASSES}, optimizer=ADAM, epochs=10,
        batch_size=50, **MNIST,
    ),
    "mnist_lenet": _classification(
        name="mnist_lenet", summary="LeNet (Conv 6/16/16, AvgPool, Dense 120-84) with a 10-way softmax",
        source="seed-models.md §1.2b", reported="test accuracy 0.9903, loss 0.0310 (84-way output in the source)",
        builder=Builder("lenet", "build_lenet"), model_options={"source_head": False},
        data_options={"validation": "fraction:0.2", "class_names": DIGITS}, optimizer=ADAM, epochs=10, batch_size=128,
        **MNIST,
    ),
    "mnist_lenet_source_head": _classification(
        name="mnist_lenet_source_head", summary="LeNet as coded: Dense(120) -> Dense(84, softmax), 84 outputs for 10 digits",
        source="seed-models.md §1.2b", reported="test accuracy 0.9903, loss 0.0310",
        builder=Builder("lenet", "build_lenet"), model_options={"source_head": True}, task=WideSoftmaxClassification(),
        num_classes_option=None, data_options={"validation": "fraction:0.2", "class_names": DIGITS}, optimizer=ADAM,
        epochs=10, batch_size=128, **MNIST,
    ),
    "kaggle_lenet50": _classification(
        name="kaggle_lenet50", summary="'LeNet-50' (Conv 32/48, Dense 256-84-10) on the Kaggle digit CSV, augmented",
        source="seed-models.md §1.2a", reported="failed: loss NaN from epoch 1, val accuracy 0.0962 (missing CSV values)",
        builder=Builder("lenet", "build_lenet50"), image_spec=GREY_28, data_formats=("kaggle_digits", "idx"),
        data_options={"validation": "shuffle:0.03:2019", "class_names": DIGITS},
        optimizer={"name": "adam", "learning_rate": 5e-4},
        # the source monitored 'val_acc', a key that does not exist, so the callback never fired
        callbacks=({"type": "reduce_lr", "monitor": "val_accuracy", "patience": 3, "factor": 0.5, "min_lr": 1e-6},),
        augmentation="digits_affine", epochs=100, batch_size=100,
    ),
    "alexnet": _classification(
        name="alexnet", summary="AlexNet as printed: 227x227 input, Conv 11x11/4 ... Dense 4096-4096-1000 (62.4M)",
        source="seed-models.md §3.6", reported="printed only (the trained model is not in the notebook)",
        builder=Builder("alexnet", "build_alexnet"), model_options={"architecture": "alexnet"}, image_spec=ImageSpec(227, 227, "rgb"),
        data_formats=("image_folders",), data_options={"validation": "test"}, optimizer=ADAM, epochs=100, batch_size=32,
        test_input_shape=(67, 67, 3),
    ),
    "alexnet_cifar10": _classification(
        name="alexnet_cifar10", summary="AlexNet layers for 32x32 CIFAR-10 (3x3 stem, Dense 1024-1024); reconstruction",
        source="seed-models.md §3.6", reported="train accuracy 0.9107, val(=test) accuracy 0.5324 after 100 epochs",
        builder=Builder("alexnet", "build_alexnet"), model_options={"architecture": "alexnet_cifar"},
        data_options={"validation": "test", "class_names": CIFAR10_CLASSES}, optimizer=ADAM, epochs=100, batch_size=32,
        **CIFAR,
    ),
    "zfnet": _classification(
        name="zfnet", summary="ZFNet as printed: 224x224 input, Conv 7x7/2 ... Dense 4096 x3 -> 1000 (218.6M)",
        source="seed-models.md §3.7", reported="printed only (the trained model is not in the notebook)",
        builder=Builder("alexnet", "build_alexnet"), model_options={"architecture": "zfnet"}, image_spec=ImageSpec(224, 224, "rgb"),
        data_formats=("image_folders",), data_options={"validation": "shuffle:0.2:42"}, optimizer=ADAM, epochs=5,
        batch_size=64, callbacks=({"type": "reduce_lr", "monitor": "val_loss", "patience": 3, "factor": 0.5, "min_lr": 1e-5},),
        test_input_shape=(32, 32, 3), very_large=True,
    ),
    "zfnet_cifar10": _classification(
        name="zfnet_cifar10", summary="ZFNet layers for 32x32 CIFAR-10 (standardised input, Dense 1024 x3); reconstruction",
        source="seed-models.md §3.7", reported="test accuracy 0.5529, loss 1.2321 after 5 epochs (README's 80.7% unsupported)",
        builder=Builder("alexnet", "build_alexnet"), model_options={"architecture": "zfnet_cifar"},
        data_options={"validation": "shuffle:0.2:42", "class_names": CIFAR10_CLASSES}, optimizer=ADAM, epochs=5, batch_size=64,
        callbacks=({"type": "reduce_lr", "monitor": "val_loss", "patience": 3, "factor": 0.5, "min_lr": 1e-5},), **CIFAR,
    ),
    "vgg16_scratch": _classification(
        name="vgg16_scratch", summary="VGG16 from scratch, 224x224 RGB, Dense 4096-4096-1000 (138.4M); never trained in the source",
        source="seed-models.md §4.1", reported="no training in the source (untrained graph saved)",
        builder=Builder("vgg", "build_vgg16"), image_spec=ImageSpec(224, 224, "rgb"), data_formats=("image_folders",),
        data_options={"validation": "fraction:0.1"}, optimizer=ADAM, epochs=10, batch_size=32,
        test_input_shape=(32, 32, 3), very_large=True,
    ),
    "vgg16_scratch_grayscale": _classification(
        name="vgg16_scratch_grayscale", summary="VGG16 from scratch as coded: a 224x224x1 (grey) input",
        source="seed-models.md §4.1", reported="no training in the source (untrained graph saved)",
        builder=Builder("vgg", "build_vgg16"), image_spec=ImageSpec(224, 224, "grayscale"), data_formats=("image_folders",),
        data_options={"validation": "fraction:0.1"}, optimizer=ADAM, epochs=10, batch_size=32,
        test_input_shape=(32, 32, 1), very_large=True,
    ),
    "vgg16_feature_extraction": Recipe(
        name="vgg16_feature_extraction", summary="frozen ImageNet VGG16 at 150x150 + Dense 256 -> sigmoid, dogs vs cats",
        source="seed-models.md §4.2", reported="val accuracy 0.9152 (best 0.9194) after 10 epochs",
        builder=Builder("vgg", "build_vgg16_transfer"), model_options={"weights": "imagenet", "fine_tune_from": None},
        optimizer=ADAM, **DOGS, **COMMON,
    ),
    "vgg16_fine_tuning": Recipe(
        name="vgg16_fine_tuning", summary="ImageNet VGG16 with block 5 trainable + Dense 256 -> sigmoid, RMSprop 1e-5",
        source="seed-models.md §4.3", reported="val accuracy 0.9572 (val loss 0.1103), train 0.9795 after 10 epochs",
        builder=Builder("vgg", "build_vgg16_transfer"), model_options={"weights": "imagenet", "fine_tune_from": VGG16_FINE_TUNE_FROM},
        optimizer={"name": "rmsprop", "learning_rate": 1e-5}, **DOGS, **COMMON,
    ),
    "resnet50_cifar10": _classification(
        name="resnet50_cifar10", summary="torchvision ResNet50 from scratch on CIFAR-10; SGD 0.1, momentum 0.9, L2 1e-4",
        source="seed-models.md §3.8", reported="no accuracy printed (output stops at epoch 17 of 50, loss ~0.85)",
        builder=Builder("resnet", "build_resnet50"), model_options={"weight_decay": 1e-4},
        data_options={"validation": "test", "class_names": CIFAR10_CLASSES},
        optimizer={"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
        # stepped on the mean training loss in the source
        callbacks=({"type": "reduce_lr", "monitor": "loss", "factor": 0.1, "patience": 5},),
        augmentation="cifar_crop_flip", epochs=50, batch_size=128, **CIFAR,
    ),
    "resnet_bottleneck_cifar100": _classification(
        name="resnet_bottleneck_cifar100",
        summary="custom bottleneck ResNet (4/5/7 blocks, 256-1024 ch.) on CIFAR-100; Adam 1e-3, clip 0.1",
        source="seed-models.md §3.8", reported="val(=test) accuracy 0.4732 after 5 epochs",
        builder=Builder("resnet", "build_resnet_bottleneck"), model_options={"weight_decay": 1e-5},
        data_options={"validation": "test"}, optimizer={"name": "adam", "learning_rate": 1e-3, "clipvalue": 0.1},
        augmentation="cifar_crop_flip_reflect", epochs=5, batch_size=128, **CIFAR,
    ),
}
