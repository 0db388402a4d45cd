"""torch ``Dataset``, batch sampler and collate over an ``edge.data.records.Dataset`` (training only).

A sample is addressed by a key ``(index, epoch, size)``: the record's index, the epoch (which seeds its
augmentation together with the run's seed: ``seeded_rng(seed, epoch, index)``) and the square input side
for this batch (YOLOv2's multi-scale training changes it every few batches). The batch sampler makes
those keys, so the augmentation of every sample is fixed by (seed, epoch, index) whatever the number of
DataLoader workers or processes, and a resumed run sees exactly the batches it would have seen.

Images: decoded once into memory (``ImageCache``) when caching is on, else read from disk per sample.
A sample is (image uint8 [3, S, S] RGB tensor, ``Target`` with boxes float32 [n, 4] xyxy input pixels and
labels int64 [n], index); the loop normalizes whole batches on its device (``normalize_batch``), which is
cheaper than per-sample float conversion and keeps worker-to-process transfers at 1 byte per pixel.
"""

from __future__ import annotations

import logging
import math
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import DistributedSampler, Sampler

from edge.data.images import read_image
from edge.data.records import ImageRecord
from edge.data.targets import Target
from edge.data.transforms import TrainTransform, eval_transform, seeded_rng

log = logging.getLogger(__name__)

SampleKey = Tuple[int, int, int]  # (record index, epoch, input side)
Batch = Tuple[torch.Tensor, List[Target], List[int]]


class ImageCache:
    """Every record's image decoded once (BGR uint8 [H, W, 3]), indexed like the records."""

    def __init__(self, records: Sequence[ImageRecord], threads: int = 2):
        paths = [r.path for r in records]
        if threads > 1 and len(paths) > 1:
            # cv2.imdecode releases the GIL: threads overlap file reads and JPEG decoding
            with ThreadPoolExecutor(max_workers=threads) as pool:
                self.images: List[np.ndarray] = list(pool.map(read_image, paths))
        else:
            self.images = [read_image(p) for p in paths]
        self.nbytes = sum(int(im.nbytes) for im in self.images)
        log.info("cached %d images in memory (%.1f MiB)", len(self.images), self.nbytes / 2**20)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.images[index]


def estimate_cache_bytes(records: Sequence[ImageRecord]) -> int:
    """Decoded size of all images (3 bytes per pixel), from the sizes the loader read from the headers."""
    return sum(int(r.width) * int(r.height) * 3 for r in records)


class DetectionDataset(TorchDataset):
    """Records -> augmented, letterboxed training samples.

    Args:
        records: the split's ``ImageRecord`` list (boxes xyxy source pixels).
        transform: a ``TrainTransform``; None = letterbox only (no augmentation).
        input_size: default square side when a key gives none (an int key).
        seed: run seed; the sample's rng is ``seeded_rng(seed, epoch, index)``.
        cache: decoded images (``ImageCache``) or None to read from disk per sample.
        pad_value: letterbox padding when ``transform`` is None.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        *,
        transform: Optional[TrainTransform],
        input_size: int,
        seed: int = 0,
        cache: Optional[ImageCache] = None,
        pad_value: int = 114,
    ):
        self.records = list(records)
        self.transform = transform
        self.input_size = int(input_size)
        self.seed = int(seed)
        self.cache = cache
        self.pad_value = int(pad_value)
        if cache is not None and len(cache) != len(self.records):
            raise ValueError(f"image cache holds {len(cache)} images for {len(self.records)} records")

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> np.ndarray:
        return self.cache[index] if self.cache is not None else read_image(self.records[index].path)

    def __getitem__(self, key: Union[int, SampleKey]) -> Tuple[torch.Tensor, Target, int]:
        if isinstance(key, (tuple, list)):
            index, epoch, size = (int(v) for v in key)
        else:
            index, epoch, size = int(key), 0, self.input_size
        record = self.records[index]
        image = self.image(index)
        if self.transform is not None:
            rng = seeded_rng(self.seed, epoch, index)
            out, boxes, labels = self.transform(image, record.boxes, record.labels, rng, (size, size))
        else:
            out, boxes, labels = eval_transform(image, record.boxes, record.labels, (size, size), self.pad_value)
        chw = torch.from_numpy(np.ascontiguousarray(out[:, :, ::-1].transpose(2, 0, 1)))
        target = Target(boxes=torch.from_numpy(np.ascontiguousarray(boxes, np.float32)),
                        labels=torch.from_numpy(np.ascontiguousarray(labels, np.int64)))
        return chw, target, index


def collate(samples: Sequence[Tuple[torch.Tensor, Target, int]]) -> Batch:
    """-> (images uint8 [B, 3, S, S] RGB, list of B Targets, list of B record indices)."""
    images = torch.stack([s[0] for s in samples])
    return images, [s[1] for s in samples], [s[2] for s in samples]


class EpochBatchSampler(Sampler):
    """Batches of ``(index, epoch, size)`` keys for one process of ``world_size``.

    Shuffling and the split across processes are ``torch.utils.data.DistributedSampler``'s (seeded with
    ``seed + epoch``; each rank gets the same number of samples, padded by repetition). Each batch's input
    size is drawn from ``sizes`` by (seed, epoch, batch // size_interval), so every rank uses the same
    size for the same step. Call ``set_epoch`` before iterating.

    Args:
        num_samples: records in the split.
        batch_size: per process.
        sizes: input sides to choose from (one entry: fixed size).
        drop_last: drop a last incomplete batch (kept if it is the only batch).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        sizes: Sequence[int],
        size_interval: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ):
        if num_samples < 1:
            raise ValueError("no samples to train on")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.sizes = [int(s) for s in sizes]
        self.size_interval = max(1, int(size_interval))
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._sampler = DistributedSampler(
            range(self.num_samples), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._sampler.set_epoch(self.epoch)

    def per_rank(self) -> int:
        return len(self._sampler)

    def __len__(self) -> int:
        n = self.per_rank()
        if self.drop_last and n >= self.batch_size:
            return n // self.batch_size
        return int(math.ceil(n / float(self.batch_size)))

    def size_for(self, batch_index: int) -> int:
        if len(self.sizes) == 1:
            return self.sizes[0]
        rnd = random.Random(f"{self.seed}/{self.epoch}/{batch_index // self.size_interval}")
        return rnd.choice(self.sizes)

    def __iter__(self) -> Iterator[List[SampleKey]]:
        indices = list(self._sampler)
        for b in range(len(self)):
            chunk = indices[b * self.batch_size : (b + 1) * self.batch_size]
            size = self.size_for(b)
            yield [(int(i), self.epoch, size) for i in chunk]
