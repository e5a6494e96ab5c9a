"""Response bodies of the BentoML endpoints; they document the API in /docs (with real examples)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelInfo(BaseModel):
    name: str = Field(description="served name", examples=["bloodcell"])
    export: str = Field(description="export folder under exported_models/", examples=["bloodcell_mobilenetv3"])
    version: str = Field(description="the exported version that computed this answer", examples=["2"])


class RankedLabel(BaseModel):
    label: str = Field(description="class name", examples=["neutrophil"])
    probability: float = Field(ge=0, le=1, description="the class's probability", examples=[0.93])


class ClassPrediction(BaseModel):
    file: str = Field(description="the uploaded file's name (name[i] for the i-th image of a .npy batch)",
                      examples=["BA_126424.jpg"])
    label: str = Field(description="most likely class", examples=["basophil"])
    probability: float = Field(ge=0, le=1, description="the most likely class's probability", examples=[0.97])
    top_k: list[RankedLabel] = Field(description="the top_k most likely classes, most likely first")
    probabilities: dict[str, float] = Field(description="every class's probability",
                                            examples=[{"basophil": 0.97, "ig": 0.02, "monocyte": 0.01}])
    heatmap_png: str | None = Field(None, description="base64 PNG at the image's size: the Grad-CAM map of this answer "
                                    "(where the model looked) over the image (explain=true)")


class ClassificationResponse(BaseModel):
    model: ModelInfo
    predictions: list[ClassPrediction] = Field(description="one per image, in upload order")


class MultitaskPrediction(BaseModel):
    file: str = Field(description="the uploaded file's name", examples=["IMG0000319.jpg"])
    abnormal_probability: float = Field(ge=0, le=1, description="probability that the X-ray shows an abnormality",
                                        examples=[0.71])
    label: str = Field(description="'abnormal' when abnormal_probability >= the model's threshold (metadata.json)",
                       examples=["abnormal"])
    body_part: str = Field(description="most likely body part", examples=["hand"])
    body_part_probability: float = Field(ge=0, le=1, description="the top body part's probability", examples=[0.88])
    body_part_probabilities: dict[str, float] = Field(description="every body part's probability", examples=[{"hand": 0.88, "leg": 0.07, "hip": 0.01, "shoulder": 0.02, "mixed": 0.02}])
    heatmap_png: str | None = Field(None, description="base64 PNG at the image's size: the Grad-CAM map of the abnormal score "
                                    "(where the model looked) over the image (explain=true)")


class MultitaskResponse(BaseModel):
    model: ModelInfo
    predictions: list[MultitaskPrediction] = Field(description="one per image, in upload order")


class StudyResponse(BaseModel):
    model: ModelInfo
    abnormal_probability: float = Field(ge=0, le=1, description="mean of the views' abnormal probabilities (MURA paper)",
                                        examples=[0.64])
    label: str = Field(description="'abnormal' when abnormal_probability >= the model's threshold", examples=["abnormal"])
    body_part: str = Field(description="most frequent body part among the views", examples=["hand"])
    views: list[MultitaskPrediction] = Field(description="each view's result, in upload order")


class Segmentation(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": "one segmented image"})

    file: str = Field(description="the uploaded file's name", examples=["NLB_459291220EDR_F0391552NCAM00252M1.jpg"])
    height: int = Field(description="the image's height in pixels (the class map's too)", examples=[256])
    width: int = Field(description="the image's width in pixels (the class map's too)", examples=[256])
    tiles: int = Field(description="model tiles the image was cut into", examples=[2])
    classes: list[str] = Field(description="class names; a class map's pixel value indexes this list",
                               examples=[["background", "soil", "bedrock", "sand", "big_rock"]])
    class_fractions: dict[str, float] = Field(description="share of the image's pixels per class",
                                              examples=[{"background": 0.0, "soil": 0.41, "bedrock": 0.39, "sand": 0.18, "big_rock": 0.02}])
    mask_png: str | None = Field(None, description="base64 palette PNG, pixel value = class index, original size (mask_format=png)")
    mask_npy: str | None = Field(None, description="base64 .npy uint8 (height, width) class map (mask_format=npy)")
    overlay_png: str | None = Field(None, description="base64 PNG of the image tinted by class, with a legend (overlay=true)")


class SegmentationResponse(BaseModel):
    model: ModelInfo
    segmentations: list[Segmentation] = Field(description="one per image, in upload order")


class ErrorBody(BaseModel):
    error: str = Field(description="what was wrong and, where it helps, what to do",
                       examples=["broken.jpg: cannot decode image (image file is truncated); send PNG or JPEG files (or .npy arrays)"])
