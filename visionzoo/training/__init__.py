"""visionzoo training: reproduce, train, evaluate and export the source projects' models.

Importing this package does not import TensorFlow. It only makes sure that, when TensorFlow is
imported later, `tf.keras` means tf-keras (Keras 2) as in the models here, and that TensorFlow's C++
start-up chatter stays out of the console.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
