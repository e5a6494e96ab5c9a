"""Run an exported model in this process, without a server, through the service's own pipeline.

    import visionzoo

    with visionzoo.load("bloodcell") as model:               # a served name from the manifest
        body = model.predict(["BA_126424.jpg", "MO_946848.jpg"], top_k=3)
        body["predictions"][0]["label"]                      # 'basophil'

    mura = visionzoo.load("mura")
    mura.predict(views); mura.predict_study(views)           # per view / one study of several views
    mars = visionzoo.load("mars")
    mars.predict(frames, overlay=True)                       # the `segment` verb (also mars.segment)

`predict` returns the dict the BentoML endpoint (`POST /<model>/<verb>`) answers, with the same keys
and values: the request goes through `visionzoo.serving.pipeline.ServedModel.answer` (decode in a
thread pool -> dynamic batcher -> engine -> the task's answer), the object every protocol of the
service calls. Options are the endpoint's form fields (`top_k`, `mask_format`, `overlay`,
`overlay_opacity`), validated and defaulted the same way.

Images may be file paths (str or pathlib.Path), bytes of an image file (PNG, JPEG, ... or .npy),
PIL images (sent as lossless PNG) or numpy arrays (H, W[, C]) or a batch (N, H, W, C) of pixels
0..255 (sent as .npy, as an HTTP client would upload them). One image or a list of them.

Errors are `visionzoo.serving.errors.ServingError` subclasses with the message the service would
answer (e.g. `UnsupportedMedia` for a file that is not an image), `UnknownModel` for a name the
manifest does not serve, `ModelNotLoaded` when the model cannot be loaded (with the reason).

Settings not given as arguments come from the same VISIONZOO_* environment variables as the service
(serving/config.py), except the batcher's queue limits: in this process a call waits for its own
images as any function call does (the queue's size and timeout shed a server's load from clients it
does not control). gRPC and metrics are not involved. Importing this module imports neither
TensorFlow nor BentoML.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .serving import config
from .serving.errors import ServingError
from .serving.pipeline import ServedModel
from .serving.processing import Upload
from .serving.tasks import Endpoint, option_field

__all__ = ["Model", "ModelNotLoaded", "ServingError", "UnknownModel", "load", "served_names"]


class UnknownModel(LookupError):
    """A name the manifest does not serve; the message lists the served names."""

    def __str__(self) -> str:  # LookupError/KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelNotLoaded(RuntimeError):
    """The model's files are missing, altered or cannot run; the message says why."""


def _manifest(server: config.ServerSettings) -> dict[str, config.ModelSettings]:
    """served name -> settings, read as the service reads them but for `server` (not the cached settings)."""
    import yaml
    from pydantic import ValidationError

    try:
        manifest = config.Manifest.model_validate(yaml.safe_load(Path(server.manifest).read_text()))
    except OSError as error:
        raise config.ConfigError(f"VISIONZOO_MANIFEST={server.manifest}: cannot read it ({error.strerror})") from None
    except (ValidationError, yaml.YAMLError) as error:
        raise config.ConfigError(f"{server.manifest}: {error}") from None
    return {name: config._model_settings(name, entry, server) for name, entry in manifest.models.items()}


def served_names(manifest: str | Path | None = None) -> list[str]:
    """The served names of the manifest (VISIONZOO_MANIFEST or the shipped models.yaml)."""
    server = config.ServerSettings(**({"manifest": Path(manifest)} if manifest else {}))
    return list(_manifest(server))


def _as_upload(item: Any, index: int) -> Upload:
    """One image as the service would receive it (the same names BentoML's endpoint gives files)."""
    default = f"images[{index}]"
    if isinstance(item, Upload):
        return item
    if isinstance(item, (str, Path)):
        path = Path(item)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise FileNotFoundError(f"{path}: cannot read it ({error.strerror or error})") from None
        return Upload(path.name or default, data)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return Upload(default, bytes(item))
    if isinstance(item, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, item, allow_pickle=False)
        return Upload(default, buffer.getvalue())
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(item, Image.Image):
        name = Path(getattr(item, "filename", "") or "").name or default
        buffer = io.BytesIO()
        try:
            item.save(buffer, format="PNG")
        except (OSError, ValueError):  # a mode PNG cannot hold (e.g. CMYK, F): its pixels as an array
            return Upload(name, _as_upload(np.asarray(item), index).data)
        return Upload(name, buffer.getvalue())
    raise TypeError(f"images[{index}]: expected a file path, bytes, a PIL image or a numpy array, "
                    f"got {type(item).__name__}")


def _as_uploads(images: Any) -> list[Upload]:
    single = (str, Path, bytes, bytearray, memoryview, np.ndarray)
    if isinstance(images, single) or hasattr(images, "getpixel"):  # one image (a PIL image has getpixel)
        images = [images]
    return [_as_upload(item, index) for index, item in enumerate(images)]


class Model:
    """One served model loaded in this process; see the module docstring. Thread-safe."""

    def __init__(self, served: ServedModel, pool: ThreadPoolExecutor) -> None:
        self._served = served
        self._pool = pool
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"visionzoo-{served.name}", daemon=True)
        self._thread.start()
        self._closed = False
        self._validators: dict[str, Any] = {}

    # ---- what it is ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._served.name

    @property
    def version(self) -> str:
        """The exported version being served."""
        return self._served.live().number

    @property
    def task(self) -> str:
        return self._served.live().task.kind

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """verb -> endpoint (summary, options) of this model's task, as the service offers them."""
        return {endpoint.verb: endpoint for endpoint in self._served.live().task.endpoints}

    @property
    def labels(self) -> dict[str, list[str]]:
        return dict(self._served.live().version.labels)

    def status(self) -> dict:
        """Export, version, engine, device, precision and batching (the service's /models entry)."""
        return self._served.status()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._served.state
        return f"<visionzoo.Model {self.name!r} {state}>"

    # ---- answers ------------------------------------------------------------------------------

    def answer(self, verb: str, images: Any, **options: Any) -> dict:
        """POST /<model>/<verb> in-process: `images` and the endpoint's options -> its JSON body."""
        endpoint = self.endpoints.get(verb)
        if endpoint is None:
            raise ValueError(f"{self.name} has no {verb!r}; it answers: {', '.join(self.endpoints)}")
        options = self._options(endpoint, options)
        uploads = _as_uploads(images)
        return self._call(self._served.answer(verb, uploads, options, protocol="python"))

    def predict(self, images: Any, **options: Any) -> dict:
        """The model's main answer: `predict` (classification, multitask) or `segment` (segmentation)."""
        verbs = self.endpoints
        return self.answer("predict" if "predict" in verbs else next(iter(verbs)), images, **options)

    def predict_study(self, images: Any) -> dict:
        """Several views of one study -> the study's answer (multitask models: mura)."""
        return self.answer("predict_study", images)

    def segment(self, images: Any, **options: Any) -> dict:
        """Class maps, class fractions and optional overlays (segmentation models: mars)."""
        return self.answer("segment", images, **options)

    def _options(self, endpoint: Endpoint, given: dict) -> dict:
        """The endpoint's options validated and defaulted as BentoML's input model does it."""
        from pydantic import ValidationError, create_model

        model = self._validators.get(endpoint.verb)
        if model is None:
            fields = {option.name: option_field(option) for option in endpoint.options}
            model = create_model(f"{self.name}_{endpoint.verb}_options", __config__={"extra": "forbid"}, **fields)
            self._validators[endpoint.verb] = model
        try:
            return model.model_validate(given).model_dump()
        except ValidationError as error:
            known = ", ".join(option.name for option in endpoint.options) or "none"
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}"
                                 for e in error.errors(include_url=False))
            raise ValueError(f"{self.name} {endpoint.verb}: {problems} (options: {known})") from None

    def _call(self, coroutine):
        if self._closed:
            coroutine.close()
            raise RuntimeError(f"model {self.name!r} is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # ---- life cycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._call(self._served.start())
        if self._served.state != "ready":
            reason = self._served.reason
            self.close()
            raise ModelNotLoaded(reason or f"{self.name}: cannot load")

    def close(self) -> None:
        """Stop the batcher, release the engine and the threads. Idempotent."""
        if self._closed:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._served.batcher.stop(0.0), self._loop).result(30)
        finally:
            self._closed = True
            for slot in (self._served.slot, self._served.previous):
                if slot is not None:
                    slot.engine.close()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Model:  # noqa: PYI034
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close() must not leave the loop thread spinning
        if not getattr(self, "_closed", True) and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)


def load(name: str, models_dir: str | Path | None = None, version: str | int | None = None,
         engine: str | None = None, precision: str | None = None, device: str | None = None,
         manifest: str | Path | None = None, warmup_batch_sizes: Sequence[int] | None = None) -> Model:
    """Load served model `name` (from the manifest: `bloodcell`, `mura`, `mars`) in this process.

    models_dir: folder of exported models (default VISIONZOO_MODELS_DIR, else the repository's
    exported_models/); version: an exported version (default the newest, or VISIONZOO_<NAME>_VERSION);
    engine: auto | onnxruntime | openvino (default VISIONZOO_ENGINE, else auto); precision: fp32 | int8
    | fp16; device: auto | cpu | cuda; warmup_batch_sizes: the batch sizes to run before the first call
    (default the server's: VISIONZOO_WARMUP_BATCH_SIZES, else 1 and the model's largest batch; a size over
    the largest means the largest). A script that sends one image at a time is ready sooner with (1,); choosing
    the engine (a race on a new machine, then cached) still times the server's sizes. Loads, verifies and
    warms the model; close() releases it.
    """
    if warmup_batch_sizes is not None and not (
            len(warmup_batch_sizes) and all(isinstance(size, int) and size > 0 for size in warmup_batch_sizes)):
        raise ValueError(f"warmup_batch_sizes must be positive integers, got {warmup_batch_sizes!r}")
    overrides: dict[str, Any] = {"grpc_port": 0}
    for key, value in (("models_dir", models_dir), ("engine", engine), ("device", device), ("manifest", manifest)):
        if value is not None:
            overrides[key] = Path(value) if key in ("models_dir", "manifest") else value
    from pydantic import ValidationError

    try:
        server = config.ServerSettings(**overrides)
    except ValidationError as error:
        raise ValueError(f"visionzoo.load: {config._explain(error, '')}") from None
    models = _manifest(server)
    if name not in models:
        raise UnknownModel(f"unknown model {name!r}; served models: {', '.join(models)}")
    settings = models[name]
    update: dict[str, Any] = {}
    if version is not None:
        update["version"] = str(version)
    if precision is not None:
        if precision not in config.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(config.PRECISIONS)}, got {precision!r}")
        update["precision"] = precision
    # No queue size or timeout in-process: they refused the tail of one large call (a 4-frame Mars call is
    # 12 tiles, run one by one) whenever the machine was busy enough to keep it queued past the timeout.
    update["batcher"] = dataclasses.replace(settings.batcher, max_queue_size=sys.maxsize, queue_timeout_us=0)
    settings = settings.model_copy(update=update)
    pool = ThreadPoolExecutor(server.decode_workers, thread_name_prefix=f"decode-{name}")
    model = Model(ServedModel(settings, server, pool, warmup_sizes=warmup_batch_sizes), pool)
    model._start()
    return model

