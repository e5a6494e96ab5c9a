"""The one table of every model: name -> Recipe. Explicit, no import-time registration magic.

    >>> from visionzoo.training.registry import get_recipe, build_model
    >>> model = build_model("mars_dual_unet")
"""

from __future__ import annotations

from .recipe import Recipe
from .recipes import bloodcell, cifar_ablation, cnn_architectures, fashion_cifar, mars, mura

RECIPES: dict[str, Recipe] = {}
for _module in (mura, bloodcell, mars, fashion_cifar, cifar_ablation, cnn_architectures):
    _clash = set(_module.RECIPES) & set(RECIPES)
    if _clash:
        raise RuntimeError(f"duplicate recipe names {sorted(_clash)} in {_module.__name__}")
    RECIPES.update(_module.RECIPES)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; run `visionzoo list` (known: {', '.join(sorted(RECIPES))})") from None


def build_model(name: str, num_classes: int | None = None, **overrides):
    """Build a registered model at its recipe's input size; `overrides` replace builder options."""
    recipe = get_recipe(name)
    options = {**recipe.model_options, **overrides}
    if num_classes is not None:
        if recipe.num_classes_option is None:
            raise ValueError(f"{name} has a fixed output size; num_classes does not apply")
        options[recipe.num_classes_option[0]] = num_classes
    return recipe.builder(input_shape=recipe.image_spec.shape, **options)


def families() -> dict[str, list[Recipe]]:
    grouped: dict[str, list[Recipe]] = {}
    for recipe in RECIPES.values():
        grouped.setdefault(recipe.family, []).append(recipe)
    return grouped
