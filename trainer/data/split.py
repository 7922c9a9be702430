"""The one stratified, seeded split of a trial into train, val and test, hashed so a changed dataset is caught."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from sklearn.model_selection import train_test_split

from trainer.config import OFFICIAL_TEST_KINDS, SplitConfig
from trainer.data.imageset import ImageSet
from trainer.errors import DataError


def make_split(images: ImageSet, split: SplitConfig, seed: int) -> dict:
    """One stratified, seeded split: {"train","val","test": sorted index lists, "hash": ...}. With
    `test: official` the test set is the publisher's test part and val is drawn from the rest; with `test_seed` the
    test part is drawn with that seed (the same for every trial) and `seed` draws val from the rest.

    The hash covers the indices, the labels and (for folders) the file names, so a changed dataset is detected."""
    labels = images.labels
    index = np.arange(len(labels))
    try:
        if split.test == "official":
            if images.official_test is None or not images.official_test.any():
                raise DataError(
                    "split: test: official needs a dataset with an official test part "
                    f"({', '.join(OFFICIAL_TEST_KINDS)})"
                )
            rest, test = index[~images.official_test], index[images.official_test]
            train, val = train_test_split(rest, test_size=split.val, stratify=labels[rest], random_state=seed)
        else:
            test_seed = seed if split.test_seed is None else split.test_seed  # fixed: the same test part for all
            rest, test = train_test_split(index, test_size=split.test, stratify=labels, random_state=test_seed)
            val_fraction = split.val / (1 - split.test)
            train, val = train_test_split(rest, test_size=val_fraction, stratify=labels[rest], random_state=seed)
    except ValueError as exc:
        counts = np.bincount(labels)
        raise DataError(
            f"cannot split {len(labels)} images stratified into train/val/test "
            f"(smallest class has {counts.min()} images): {exc}"
        ) from None
    parts = {name: sorted(int(i) for i in idx) for name, idx in (("train", train), ("val", val), ("test", test))}
    digest = hashlib.sha256(json.dumps([parts, labels.tolist(), images.identity()]).encode()).hexdigest()[:16]
    result = {
        **parts,
        "hash": digest,
        "classes": images.classes,
        "skipped_files": images.skipped,
        "test_part": "official" if split.test == "official" else "random" if split.test_seed is None else "held_out",
    }
    if images.files is not None:
        result["files"] = images.files
    return result
