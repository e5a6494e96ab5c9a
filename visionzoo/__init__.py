"""visionzoo: reproduce, export and serve classic and medical/scientific image models.

Subpackages:
    visionzoo.preprocessing   image file -> model pixels (NumPy + Pillow), shared by both sides
    visionzoo.training        TensorFlow 2 + tf-keras: the registry, training, evaluation, export
    visionzoo.serving         the BentoML service and its engines (no TensorFlow)
    visionzoo.api             an exported model in this process, without a server (`visionzoo.load`)

In-process inference, with the service's own pipeline and answers (see visionzoo/api.py):

    import visionzoo

    with visionzoo.load("bloodcell") as model:          # served names: visionzoo/serving/models.yaml
        model.predict(["cell.jpg"], top_k=3)            # the body POST /bloodcell/predict answers

Importing `visionzoo` imports neither TensorFlow nor BentoML; `load` imports the serving pipeline
(ONNX Runtime, no BentoML) when first called.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("visionzoo")
except _metadata.PackageNotFoundError:  # a Bento copies the sources without installing the package
    __version__ = "0.0.0+unknown"


def load(name, models_dir=None, version=None, engine=None, precision=None, device=None, manifest=None,
         warmup_batch_sizes=None):
    """Load served model `name` ("bloodcell", "mura", "mars") in this process -> `visionzoo.api.Model`
    with `predict(images, **options)` (and `predict_study` / `segment`), `close()`, and `with` support.

    Arguments as `visionzoo.api.load`: models_dir (default VISIONZOO_MODELS_DIR or exported_models/),
    version (default the newest), engine (auto | onnxruntime | openvino), precision (fp32 | int8 | fp16),
    device (auto | cpu | cuda), warmup_batch_sizes (default the server's: 1 and the largest batch)."""
    from .api import load as _load

    return _load(name, models_dir=models_dir, version=version, engine=engine, precision=precision, device=device,
                 manifest=manifest, warmup_batch_sizes=warmup_batch_sizes)


__all__ = ["__version__", "load"]
