"""visionzoo: reproduce, export and serve classic and medical/scientific image models.

Subpackages:
    visionzoo.preprocessing   image file -> model pixels (NumPy + Pillow), shared by both sides
    visionzoo.training        TensorFlow 2 + tf-keras: the registry, training, evaluation, export
    visionzoo.serving         the BentoML service and its engines (no TensorFlow)

Importing `visionzoo` imports neither TensorFlow nor BentoML.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("visionzoo")
except _metadata.PackageNotFoundError:  # a Bento copies the sources without installing the package
    __version__ = "0.0.0+unknown"
