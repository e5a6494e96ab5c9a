"""A recipe is a source project's training setup written down as data, and the resolved per-run
config that the CLI builds from it (defaults -> config file -> --set flags -> explicit flags)."""

from __future__ import annotations

import ast
import importlib.util
import json
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from visionzoo.preprocessing import ImageSpec

from .gradcam import Explanation
from .tasks import Task


@dataclass(frozen=True)
class Builder:
    """A model builder, `build_*` in `visionzoo.training.models.<module>`, imported when a model is
    built: the models import TensorFlow, which listing recipes, `--help` and refusing bad arguments
    do not need."""

    module: str
    function: str

    def resolve(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(f"visionzoo.training.models.{self.module}"), self.function)

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def parameter_names(self) -> frozenset[str]:
        """The builder's parameter names, read from its module's source without importing it."""
        spec = importlib.util.find_spec(f"visionzoo.training.models.{self.module}")
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == self.function)
        arguments = function.args
        return frozenset(a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs))


@dataclass(frozen=True)
class Recipe:
    """Everything the source project fixed for one model.

    Args:
        name: registry key.
        family: source project / family heading for `visionzoo list`.
        summary: one line for `visionzoo list`.
        source: where the facts come from (seed-models.md section).
        reported: the source's printed result, for model cards and reproduction tables.
        builder: `build_*(input_shape, ..., **model_options) -> tf_keras.Model`, named (Builder)
            so that TensorFlow loads only when a model is built.
        task: how data feeds the model and how predictions are scored.
        image_spec: how raw images become input pixels (also serving's preprocessing).
        data_formats: loader names this model reads, in auto-detection order.
        model_options: builder keyword arguments (source values).
        num_classes_option: builder argument that receives a class count from the data
            (e.g. "num_body_parts"), paired with the target it counts.
        optimizer: {"name": adam|adamw|sgd|rmsprop, "learning_rate": ..., other kwargs}.
        callbacks: ({"type": early_stopping|reduce_lr, ...keras kwargs}, ...).
        augmentation: a name in visionzoo.training.data.augment.AUGMENTATIONS, or None.
        class_weight: "balanced" or None.
        served: whether the BentoML service serves this family's model.
        test_input_shape: a smaller input shape for fast registry tests (None: the real one).
        very_large: too big for the default test run (e.g. ZFNet's 218M parameters); `make
            test-slow` still builds and exports it.
        explain: the pooling layer, output and class whose Grad-CAM map the export adds as
            output `cam` (training/gradcam.py); None: no map.
    """

    name: str
    family: str
    summary: str
    source: str
    builder: Builder
    task: Task
    image_spec: ImageSpec
    data_formats: tuple[str, ...]
    epochs: int
    batch_size: int
    optimizer: dict
    reported: str = ""
    model_options: dict = field(default_factory=dict)
    data_options: dict = field(default_factory=dict)
    num_classes_option: tuple[str, str] | None = None
    callbacks: tuple[dict, ...] = ()
    augmentation: str | None = None
    class_weight: str | None = None
    loss: str = "default"
    ignore_background: bool = False
    balance_classes: bool = False
    served: bool = False
    test_input_shape: tuple[int, int, int] | None = None
    very_large: bool = False
    explain: Explanation | None = None


@dataclass
class TrainConfig:
    """The resolved settings of one training run (written to <run>/config.json)."""

    model: str
    data_dir: str
    out: str = "runs"
    data_format: str | None = None
    epochs: int = 1
    batch_size: int = 32
    seed: int = 42
    split_seed: int | None = None
    optimizer: dict = field(default_factory=dict)
    model_options: dict = field(default_factory=dict)
    data_options: dict = field(default_factory=dict)
    callbacks: list = field(default_factory=list)
    augmentation: str | None = None
    class_weight: str | None = None
    loss: str = "default"
    label_smoothing: float = 0.0
    image_size: list[int] | None = None
    ignore_background: bool = False
    balance_classes: bool = False
    strategy: str = "auto"
    precision: str = "float32"
    jit: bool = False
    smoke: bool = False
    steps_per_epoch: int | None = None
    max_examples: int | None = None
    skip_bad: bool = False
    cache_dir: str | None = None
    # start from these weights instead of the recipe's initialisation: a finished run folder or an export
    # version with its SavedModel, of this recipe and these classes (train.load_init_source)
    init_from: str | None = None

    @classmethod
    def from_recipe(cls, recipe: Recipe, data_dir: str, **overrides) -> TrainConfig:
        config = cls(
            model=recipe.name,
            data_dir=str(data_dir),
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            optimizer=dict(recipe.optimizer),
            model_options=dict(recipe.model_options),
            data_options=dict(recipe.data_options),
            callbacks=[dict(c) for c in recipe.callbacks],
            augmentation=recipe.augmentation,
            class_weight=recipe.class_weight,
            loss=recipe.loss,
            ignore_background=recipe.ignore_background,
            balance_classes=recipe.balance_classes,
        )
        return config.updated(overrides)

    def updated(self, overrides: dict) -> TrainConfig:
        """Apply {"epochs": 3, "optimizer.learning_rate": 1e-4, ...}; dotted keys reach into dicts."""
        config = replace(self, optimizer=dict(self.optimizer), model_options=dict(self.model_options),
                         data_options=dict(self.data_options), callbacks=[dict(c) for c in self.callbacks])
        known = {f.name for f in fields(self)}
        for key, value in overrides.items():
            head, _, rest = key.partition(".")
            if head not in known:
                raise ValueError(f"unknown setting {key!r}; settings are {sorted(known)}")
            if rest:
                target = getattr(config, head)
                if not isinstance(target, dict):
                    raise ValueError(f"{head} is not a group of settings; use {head}=VALUE")
                target[rest] = value
            else:
                setattr(config, head, value)
        return config

    def check(self) -> None:
        """ValueError naming the first number a run cannot start with, before any data loads."""
        counts = {"epochs": self.epochs, "batch_size": self.batch_size}
        if self.steps_per_epoch is not None:  # None: the whole training split per epoch
            counts["steps_per_epoch"] = self.steps_per_epoch
        if self.max_examples is not None:  # None: every example
            counts["max_examples"] = self.max_examples
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        rate = self.optimizer.get("learning_rate")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0):
            raise ValueError(f"optimizer.learning_rate must be a positive number, got {rate!r}")
        smoothing = self.label_smoothing
        if isinstance(smoothing, bool) or not isinstance(smoothing, int | float) or not 0 <= smoothing < 1:
            raise ValueError(f"label_smoothing must be a number from 0 up to (not including) 1, got {smoothing!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls(**json.loads(text))

    @property
    def data_seed(self) -> int:
        """The seed that splits the data: `split_seed`, else `seed`.

        Set `split_seed` to train a second model (another `seed`: other initial weights, batch order
        and augmentation) on the same train/val/test split as the first, e.g. an ensemble member.
        """
        return self.seed if self.split_seed is None else self.split_seed

    def image_spec(self, recipe: Recipe) -> ImageSpec:
        """The recipe's preprocessing at this run's input size (`image_size = [height, width]`)."""
        if not self.image_size:
            return recipe.image_spec
        height, width = (int(v) for v in self.image_size)
        return replace(recipe.image_spec, height=height, width=width)


def parse_value(text: str) -> Any:
    """`--set` values: JSON when it parses (numbers, true/false/null, lists), else the raw string."""
    lowered = {"none": None, "true": True, "false": False}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(assignments: list[str]) -> dict:
    overrides = {}
    for item in assignments or []:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def read_config_file(path: Path) -> dict:
    """A TOML file of overrides; tables become dotted keys ([optimizer] learning_rate = 1e-4)."""
    with Path(path).open("rb") as handle:
        data = tomllib.load(handle)
    data = _none_strings(data)
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "callbacks":
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _none_strings(value):
    """TOML has no null: the string "none" means None (e.g. weights = "none")."""
    if isinstance(value, dict):
        return {k: _none_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_none_strings(v) for v in value]
    return None if isinstance(value, str) and value.lower() == "none" else value
