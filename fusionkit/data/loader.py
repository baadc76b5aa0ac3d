"""Collation into :class:`MultimodalBatch`, a seeded length-bucketed batch sampler, and ``make_loader``."""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch

from fusionkit.data.batch import MultimodalBatch
from fusionkit.data.dataset import MultimodalDataset

PADDING_MODES = ("dynamic", "fixed")
BUCKET_BATCHES = 50  # batches per bucket: sorting inside ~50 batches keeps the order random but padding small


def _pad_stack(arrays: list, length: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = np.zeros((len(arrays), length, dim), dtype=np.float32)
    mask = np.zeros((len(arrays), length), dtype=bool)
    for i, a in enumerate(arrays):
        n = min(len(a), length)
        out[i, :n] = a[:n]
        mask[i, :n] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def collate(
    examples: list,
    *,
    padding: str = "dynamic",
    max_seq_length: int = 50,
    pad_token_id: int = 0,
    aligned: bool = True,
    max_feature_length: tuple[int, int] | None = None,
) -> MultimodalBatch:
    """Pad ``examples`` to the longest in the batch (``dynamic``) or to ``max_seq_length`` (``fixed``).

    Unaligned features are padded to their own longest length (``fixed``: ``max_feature_length``) and the batch
    carries ``acoustic_mask`` / ``visual_mask`` (True = real frame). A channel with 0 features (absent from the
    dataset, or dropped by :meth:`LoadedData.select_modalities`) is ``None`` in the batch, with its mask.
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"unknown padding {padding!r}; expected one of {', '.join(PADDING_MODES)}")
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    lengths = [len(e.input_ids) for e in examples]
    seq_len = max(lengths) if padding == "dynamic" else max_seq_length
    if max(lengths) > seq_len:
        raise ValueError(f"an example has {max(lengths)} word pieces, more than max_seq_length={seq_len}")
    ids = np.full((len(examples), seq_len), pad_token_id, dtype=np.int64)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = e.input_ids
    input_ids = torch.from_numpy(ids)
    attention_mask = torch.arange(seq_len)[None, :] < torch.tensor(lengths)[:, None]
    d_a, d_v = examples[0].acoustic.shape[1], examples[0].visual.shape[1]
    if aligned:
        acoustic, _ = _pad_stack([e.acoustic for e in examples], seq_len, d_a)
        visual, _ = _pad_stack([e.visual for e in examples], seq_len, d_v)
        a_mask = v_mask = None
    else:
        if padding == "fixed" and max_feature_length is not None:
            t_a, t_v = max_feature_length
        else:
            t_a = max(1, max(len(e.acoustic) for e in examples))
            t_v = max(1, max(len(e.visual) for e in examples))
        acoustic, a_mask = _pad_stack([e.acoustic for e in examples], t_a, d_a)
        visual, v_mask = _pad_stack([e.visual for e in examples], t_v, d_v)
    if d_a == 0:  # an absent channel (0 features) is None, never a tensor of zeros
        acoustic = a_mask = None
    if d_v == 0:
        visual = v_mask = None
    return MultimodalBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=torch.zeros_like(input_ids),
        acoustic=acoustic,
        visual=visual,
        label=torch.tensor([e.label for e in examples], dtype=torch.float32),
        ids=[e.id for e in examples],
        acoustic_mask=a_mask,
        visual_mask=v_mask,
    )


def _dist_rank_world(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 0, 1
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise ValueError("distributed=True needs an initialised torch.distributed process group "
                         "(call torch.distributed.init_process_group first)")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of similar length: shuffle, cut into buckets of ``bucket_batches`` batches, sort each bucket by
    length, batch it, and shuffle the batches. Seeded by ``seed + epoch`` (``set_epoch``).

    With ``num_replicas > 1`` each rank takes every ``num_replicas``-th batch (the batch list is padded by
    repeating batches so every rank gets the same number), as ``DistributedSampler`` does for indices.
    """

    def __init__(self, lengths, *, batch_size: int, seed: int = 0, drop_last: bool = False,
                 bucket_batches: int = BUCKET_BATCHES, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.bucket_batches = bucket_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _all_batches(self) -> list:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        bucket = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, len(order), bucket):
            chunk = order[start:start + bucket]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        batches = [batches[i].tolist() for i in rng.permutation(len(batches))]
        if self.num_replicas > 1 and batches:
            total = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
            batches += batches[: total - len(batches)]
        return batches

    def __iter__(self):
        return iter(self._all_batches()[self.rank::self.num_replicas])

    def __len__(self) -> int:
        n = len(self.lengths)
        # every bucket can leave one short batch: count them exactly
        bucket = self.batch_size * self.bucket_batches
        count = 0
        for start in range(0, n, bucket):
            size = min(bucket, n - start)
            count += size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)
        return math.ceil(count / self.num_replicas)


def length_buckets(lengths, *, batch_size: int, bucket_batches: int = BUCKET_BATCHES) -> list:
    """Index batches for inference, bucketed as in training but without shuffling: the dataset order is cut into
    buckets of ``bucket_batches`` batches and each bucket is sorted by length (stable) before it is batched.

    Every index appears exactly once; callers put the outputs back in dataset order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    lengths = np.asarray(lengths)
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(lengths), bucket):
        chunk = np.arange(start, min(start + bucket, len(lengths)))
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    return batches


class MultimodalLoader:
    """An iterable of :class:`MultimodalBatch` wrapping a ``DataLoader``; ``set_epoch`` reseeds shuffling.

    Without explicit ``set_epoch`` calls each new iteration advances the epoch, so shuffled orders differ
    between epochs but are reproducible from ``seed``.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, sampler) -> None:
        self.loader = loader
        self.sampler = sampler
        self._epoch = 0
        self._explicit = False

    @property
    def dataset(self) -> MultimodalDataset:
        return self.loader.dataset

    @property
    def batch_size(self):
        return getattr(self.sampler, "batch_size", self.loader.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)
        self._explicit = True

    def __iter__(self):
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self._epoch)
        if not self._explicit:
            self._epoch += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


class _SeededRandomBatches(torch.utils.data.Sampler):
    """Shuffled fixed-size batches (no bucketing), seeded by ``seed + epoch``."""

    def __init__(self, n: int, *, batch_size: int, seed: int, drop_last: bool) -> None:
        self.n, self.batch_size, self.seed, self.drop_last, self.epoch = n, batch_size, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()
        for i in range(0, self.n, self.batch_size):
            batch = order[i:i + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)


def make_loader(
    dataset: MultimodalDataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    padding: str = "dynamic",
    bucketing: bool = True,
    distributed: bool = False,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    index_batches: list | None = None,
) -> MultimodalLoader:
    """An iterable of :class:`MultimodalBatch` over ``dataset``.

    ``shuffle=True`` with ``bucketing=True`` (training default) uses :class:`BucketBatchSampler`; without
    shuffling the order is the dataset's. ``distributed=True`` shards across ``torch.distributed`` ranks
    (a ``DistributedSampler`` when not bucketing). ``padding``: ``dynamic`` (longest in batch) or ``fixed``
    (``dataset.max_seq_length``). ``pin_memory``: collate into page-locked host memory, so that
    ``batch.to("cuda", non_blocking=True)`` overlaps the copy with compute. ``index_batches``: explicit lists of
    dataset indices, one per batch, in the order given (e.g. :func:`length_buckets` for inference).
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"unknown padding {padding!r}; expected one of {', '.join(PADDING_MODES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    rank, world = _dist_rank_world(distributed)
    max_feat = None
    if not dataset.aligned:
        max_feat = (int(dataset.acoustic_lengths.max(initial=1)), int(dataset.visual_lengths.max(initial=1)))
    collate_fn = partial(
        collate,
        padding=padding,
        max_seq_length=dataset.max_seq_length,
        pad_token_id=dataset.pad_token_id,
        aligned=dataset.aligned,
        max_feature_length=max_feat,
    )
    common = dict(collate_fn=collate_fn, num_workers=num_workers, persistent_workers=False, pin_memory=pin_memory)
    if index_batches is not None:
        sampler = None
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=index_batches, **common)
    elif shuffle and bucketing:
        sampler = BucketBatchSampler(dataset.lengths, batch_size=batch_size, seed=seed, drop_last=drop_last,
                                     num_replicas=world, rank=rank)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **common)
    elif distributed:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle,
                                                      seed=seed, drop_last=drop_last)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                             **common)
    elif shuffle:
        sampler = _SeededRandomBatches(len(dataset), batch_size=batch_size, seed=seed, drop_last=drop_last)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **common)
    else:
        sampler = None
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=drop_last,
                                             **common)
    return MultimodalLoader(loader, sampler)
