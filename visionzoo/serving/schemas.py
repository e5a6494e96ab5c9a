"""Response bodies of the BentoML endpoints (they also document the API in /docs)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    name: str = Field(description="served name (mura, bloodcell, mars)")
    export: str = Field(description="export folder under exported_models/")
    version: str


class RankedLabel(BaseModel):
    label: str
    probability: float


class BloodCellPrediction(BaseModel):
    file: str
    label: str = Field(description="most likely class")
    probability: float
    top_k: list[RankedLabel]
    probabilities: dict[str, float]


class BloodCellResponse(BaseModel):
    model: ModelInfo
    predictions: list[BloodCellPrediction]


class MuraPrediction(BaseModel):
    file: str
    abnormal_probability: float
    label: str = Field(description="'abnormal' when abnormal_probability >= the model's threshold (0.5)")
    body_part: str
    body_part_probability: float
    body_part_probabilities: dict[str, float]


class MuraResponse(BaseModel):
    model: ModelInfo
    predictions: list[MuraPrediction]


class MuraStudyResponse(BaseModel):
    model: ModelInfo
    abnormal_probability: float = Field(description="mean of the views' abnormal probabilities (MURA paper)")
    label: str
    body_part: str = Field(description="most frequent body part among the views")
    views: list[MuraPrediction]


class Segmentation(BaseModel):
    file: str
    height: int
    width: int
    tiles: int = Field(description="64x128 model tiles the image was cut into")
    classes: list[str]
    class_fractions: dict[str, float] = Field(description="share of the image's pixels per class")
    mask_png: str | None = Field(None, description="base64 palette PNG, pixel value = class index, original size")
    mask_npy: str | None = Field(None, description="base64 .npy uint8 (height, width) class map, when mask_format=npy")
    overlay_png: str | None = Field(None, description="base64 PNG of the image with classes coloured, when overlay=true")


class MarsResponse(BaseModel):
    model: ModelInfo
    segmentations: list[Segmentation]
