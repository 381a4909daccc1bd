"""Data: CIFAR-10 reading, the on-device loader, and the scale-detection tasks (``book/methods.md``,
"Tasks").

- :mod:`~stabkit.data.cifar_files`: where CIFAR-10 is searched (:func:`data_roots`, :func:`cifar10_location`)
  and how its layouts decode: torchvision's pickles or class folders (unpacked or a tar archive); errors name
  the damaged file.
- :mod:`~stabkit.data.cifar`: :func:`cifar10_tensors` reads a split into ``uint8 [N, 3, 32, 32]`` tensors
  (cached); :func:`cifar10` wraps a split as a ``Dataset``.
- :mod:`~stabkit.data.loader`: :class:`DeviceLoader` keeps a whole data set on the device and makes the
  batches there (crop + flip, normalisation, Fig. 1 noise) with no host synchronisation per batch.
- :mod:`~stabkit.data.scale_detection`: :class:`TwoPoints` (2-D) and :class:`ScaleDetection1D` (1-D) and
  their probe sets :func:`twopoints_probes`, :func:`scale1d_probes`.
"""
from __future__ import annotations

from .cifar import CIFAR10, CIFAR10_MEAN, CIFAR10_STD, cifar10, cifar10_tensors
from .cifar_files import CLASSES, DataNotFoundError, cache_dir, cifar10_location, data_roots, shared_data_dir
from .loader import DeviceLoader, crop_flip, default_eval_batch_size
from .scale_detection import (SHUFFLE_SEED, PairTask, ScaleDetection1D, TwoPoints, scale1d_images, scale1d_pairs,
                              scale1d_probes, twopoints_images, twopoints_pairs, twopoints_probes)

__all__ = [
    "CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "DataNotFoundError", "PairTask", "SHUFFLE_SEED", "cache_dir",
    "data_roots", "shared_data_dir",
    "cifar10", "cifar10_location", "cifar10_tensors", "CIFAR10", "DeviceLoader", "crop_flip", "default_eval_batch_size",
    "twopoints_pairs", "twopoints_images", "TwoPoints", "twopoints_probes",
    "scale1d_pairs", "scale1d_images", "ScaleDetection1D", "scale1d_probes",
]
