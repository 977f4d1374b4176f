"""Data: datasets, the threaded torchdata pipeline, and Kornia augmentation on the device.

The engine's API: ``build_dataset``, ``build_pipeline`` → ``DataPipeline`` (iterate CPU batches,
``to_device`` to augment/transform them, ``set_epoch``, ``state_dict``/``load_state_dict``) and
``check_data`` for ``okc check``.
"""

from okc.data.check import check_data
from okc.data.pipeline import MASK_KEYS, DataPipeline, build_dataset, build_pipeline

__all__ = ["MASK_KEYS", "DataPipeline", "build_dataset", "build_pipeline", "check_data"]
