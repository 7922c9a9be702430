"""The images of a trial: `load_images` opens a dataset at one size, from the per-machine decoded-image cache
(`trainer.data.cache`: decoded once, read by row, shared by every trial of the machine through the page cache) or, where
no cache can be written, from memory (small datasets) or the image files (decoded lazily, per epoch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.config import DatasetConfig
from trainer.data.cache import open_cached
from trainer.data.identity import Binding, check_binding
from trainer.data.imageset import ImageSet, load_uncached


def load_images(
    config: DatasetConfig, image_size: int, cache_dir: str | Path | None = None, binding: Binding | None = None
) -> ImageSet:
    """The dataset `config` describes at `image_size`, honouring `limit_per_class` (first images per class).

    With `cache_dir`, pixels come from the decoded-image cache there (built on first use); a cache that cannot be
    written falls back to decoding, with one warning. With `binding` (what a study bound the dataset to), other
    data is refused (`DataError`): another number of files always, other contents when the cache entry was built
    from them (it hashes every file it decodes)."""
    if cache_dir is not None:
        images = open_cached(config, image_size, Path(cache_dir), binding=binding)
    else:
        if binding is not None:
            check_binding(config, binding)
        images = load_uncached(config, image_size)
    if config.limit_per_class:
        keep = np.concatenate(
            [np.flatnonzero(images.labels == c)[: config.limit_per_class] for c in range(len(images.classes))]
        )
        images = images.subset(np.sort(keep))
    return images
