"""Public API, MAG-BERT alignment, collation, samplers and the synthetic dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from data_fixtures import WordByWordTokenizer, vocab_id
from fusionkit.data import (
    BucketBatchSampler,
    LoadReport,
    MultimodalBatch,
    build_dataset,
    collate,
    load_splits,
    make_loader,
)
from fusionkit.data.segments import RawSegment


pytestmark = pytest.mark.usefixtures("isolated_cache")


def _segment(seg_id, words, label=1.0, d_a=3, d_v=2):
    n = len(words)
    acoustic = (np.arange(n * d_a, dtype=np.float32).reshape(n, d_a) + 1)
    visual = -(np.arange(n * d_v, dtype=np.float32).reshape(n, d_v) + 1)
    return RawSegment(id=seg_id, words=list(words), acoustic=acoustic, visual=visual, label=label)


def test_mag_alignment_repeats_rows_per_word_piece_with_zero_special_rows(tok):
    seg = _segment("s1", ["i", "wonderfully", "loved", "films"])
    ds = build_dataset([seg], tokenizer=tok, max_seq_length=50, split="train", report=LoadReport())
    ex = ds[0]
    expected_ids = [vocab_id(t) for t in ["[CLS]", "i", "wonderful", "##ly", "loved", "film", "##s", "[SEP]"]]
    assert ex.input_ids.tolist() == expected_ids
    word_of_piece = [0, 1, 1, 2, 3, 3]
    np.testing.assert_array_equal(ex.acoustic[1:-1], seg.acoustic[word_of_piece])
    np.testing.assert_array_equal(ex.visual[1:-1], seg.visual[word_of_piece])
    assert not ex.acoustic[0].any() and not ex.acoustic[-1].any()
    assert not ex.visual[0].any() and not ex.visual[-1].any()
    assert ex.acoustic.dtype == np.float32 and ex.label == 1.0 and ex.id == "s1"


def test_truncation_keeps_sep_and_cuts_pieces_to_max_minus_two(tok):
    seg = _segment("s1", ["i", "wonderfully", "loved", "films"])
    report = LoadReport()
    ds = build_dataset([seg], tokenizer=tok, max_seq_length=5, split="train", report=report)
    ex = ds[0]
    assert ex.input_ids.tolist() == [vocab_id(t) for t in ["[CLS]", "i", "wonderful", "##ly", "[SEP]"]]
    np.testing.assert_array_equal(ex.acoustic[1:-1], seg.acoustic[[0, 1, 1]])
    assert not ex.acoustic[-1].any()
    assert report.truncated["train"] == 1


def test_word_by_word_and_batched_tokenization_agree(tok):
    slow = WordByWordTokenizer(tok)
    segs = [_segment("a", ["i", "wonderfully", "loved", "films"]), _segment("b", ["the", "movie", "was", "boring"]),
            _segment("c", ["unknownword", "good"])]
    fast_ds = build_dataset(segs, tokenizer=tok, max_seq_length=50, split="train", report=LoadReport())
    slow_ds = build_dataset(segs, tokenizer=slow, max_seq_length=50, split="train", report=LoadReport())
    for i in range(3):
        np.testing.assert_array_equal(fast_ds[i].input_ids, slow_ds[i].input_ids)
        np.testing.assert_array_equal(fast_ds[i].acoustic, slow_ds[i].acoustic)


def test_collate_dynamic_and_fixed_padding(tok):
    segs = [_segment("a", ["i", "loved", "it"]), _segment("b", ["the", "movie", "was", "very", "boring"], -2.0)]
    ds = build_dataset(segs, tokenizer=tok, max_seq_length=12, split="train", report=LoadReport())
    batch = collate([ds[0], ds[1]], padding="dynamic", max_seq_length=12)
    assert isinstance(batch, MultimodalBatch)
    assert batch.input_ids.shape == (2, 7) and batch.acoustic.shape == (2, 7, 3) and batch.visual.shape == (2, 7, 2)
    assert batch.attention_mask.dtype == torch.bool
    assert batch.attention_mask.tolist() == [[True] * 5 + [False] * 2, [True] * 7]
    assert batch.input_ids[0, 5:].tolist() == [0, 0]
    assert not batch.acoustic[0, 4:].any()
    assert batch.token_type_ids.eq(0).all() and batch.aligned
    assert batch.label.tolist() == [1.0, -2.0] and batch.ids == ["a", "b"]
    fixed = collate([ds[0], ds[1]], padding="fixed", max_seq_length=12)
    assert fixed.input_ids.shape == (2, 12) and fixed.acoustic.shape == (2, 12, 3)
    torch.testing.assert_close(fixed.acoustic[:, :7], batch.acoustic)


def test_collate_unaligned_sets_feature_masks():
    from fusionkit.data.dataset import Example

    ex = [Example(np.array([2, 5, 3]), np.ones((4, 3), np.float32), np.ones((2, 2), np.float32), 0.5, "a"),
          Example(np.array([2, 3]), np.ones((6, 3), np.float32), np.ones((1, 2), np.float32), -0.5, "b")]
    batch = collate(ex, aligned=False)
    assert not batch.aligned
    assert batch.acoustic.shape == (2, 6, 3) and batch.visual.shape == (2, 2, 2)
    assert batch.acoustic_mask.tolist() == [[True] * 4 + [False] * 2, [True] * 6]
    assert batch.visual_mask.tolist() == [[True, True], [True, False]]
    assert batch.a_mask is batch.acoustic_mask


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 200), batch_size=st.integers(1, 17), seed=st.integers(0, 5), drop_last=st.booleans())
def test_bucket_sampler_covers_every_index_once(n, batch_size, seed, drop_last):
    lengths = np.random.default_rng(seed).integers(3, 50, n)
    sampler = BucketBatchSampler(lengths, batch_size=batch_size, seed=seed, drop_last=drop_last)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    assert all(len(b) <= batch_size for b in batches)
    if drop_last:
        assert all(len(b) == batch_size for b in batches)
    else:
        assert sorted(flat) == list(range(n))


def test_bucket_sampler_is_seeded_epoch_dependent_and_groups_lengths():
    lengths = np.random.default_rng(0).integers(3, 50, 400)
    a = BucketBatchSampler(lengths, batch_size=8, seed=3)
    b = BucketBatchSampler(lengths, batch_size=8, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    # bucketing: mean in-batch length spread is far below that of random batches
    spread = np.mean([np.ptp(lengths[bt]) for bt in a])
    rand = np.mean([np.ptp(lengths[np.random.default_rng(i).choice(400, 8)]) for i in range(50)])
    assert spread < rand / 3


def test_bucket_sampler_shards_batches_across_replicas():
    lengths = np.arange(100) % 30 + 3
    shards = [list(BucketBatchSampler(lengths, batch_size=8, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    covered = {i for s in shards for b in s for i in b}
    assert covered == set(range(100))


def test_synthetic_load_and_loader_end_to_end():
    data = load_splits("synthetic")
    assert set(data.splits) == {"train", "valid", "test"}
    assert [len(data.splits[s]) for s in ("train", "valid", "test")] == [240, 60, 60]
    info = data.info
    assert (info.d_acoustic, info.d_visual, info.simulated, info.format) == (74, 47, True, "synthetic")
    assert "SIMULATED" in info.description
    labels = data.splits["train"].labels
    assert labels.min() >= -3 and labels.max() <= 3 and (labels > 0).any() and (labels < 0).any()
    assert info.report.total_sanitized > 0  # the simulated -inf artifacts were replaced and counted
    loader = make_loader(data.splits["train"], batch_size=32, shuffle=True, seed=0)
    seen = []
    for batch in loader:
        assert batch.acoustic.shape[:2] == batch.input_ids.shape
        assert torch.isfinite(batch.acoustic).all() and torch.isfinite(batch.visual).all()
        # padded and special positions carry zero features
        assert not batch.acoustic[~batch.attention_mask].any()
        assert not batch.acoustic[:, 0].any()
        seen.extend(batch.ids)
    assert sorted(seen) == sorted(data.splits["train"].ids)
    first_epoch = [b.ids for b in loader]
    assert first_epoch != [b.ids for b in loader]  # a new epoch reshuffles
    loader.set_epoch(5)
    again = [b.ids for b in loader]
    assert again == [b.ids for b in loader]  # explicit epochs are reproducible


def test_synthetic_features_carry_label_signal():
    data = load_splits("synthetic", seed=1)
    ds = data.splits["train"]
    mean_a = np.stack([ex.acoustic[1:-1].mean(0) for ex in ds])
    corr = [abs(np.corrcoef(mean_a[:, d], ds.labels)[0, 1]) for d in range(mean_a.shape[1])]
    assert max(corr) > 0.3 and np.median(corr) < 0.2


def test_eval_loader_keeps_order_and_max_samples_is_counted():
    data = load_splits("synthetic", max_samples=50, seed=2)
    assert len(data.splits["train"]) == 50 and len(data.splits["valid"]) == 50
    assert data.info.report.dropped["max_samples:train"] == 190
    loader = make_loader(data.splits["valid"], batch_size=16, shuffle=False)
    ids = [i for b in loader for i in b.ids]
    assert ids == data.splits["valid"].ids
    fixed = next(iter(make_loader(data.splits["valid"], batch_size=4, shuffle=False, padding="fixed")))
    assert fixed.input_ids.shape == (4, 50)


def test_seed_changes_synthetic_and_cache_reuses(tmp_path):
    a = load_splits("synthetic", seed=0)
    b = load_splits("synthetic", seed=0)
    c = load_splits("synthetic", seed=1)
    np.testing.assert_array_equal(a.splits["train"].input_ids, b.splits["train"].input_ids)
    assert a.splits["train"].ids != c.splits["train"].ids or not np.array_equal(a.splits["train"].labels,
                                                                                 c.splits["train"].labels)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_api_argument_errors():
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*mosi-sim"):
        load_splits("nope")
    with pytest.raises(ValueError, match="max_seq_length"):
        load_splits("synthetic", max_seq_length=2)
    data = load_splits("synthetic", max_samples=8)
    with pytest.raises(ValueError, match="padding"):
        make_loader(data.splits["train"], batch_size=4, shuffle=False, padding="longest")
    with pytest.raises(ValueError, match="torch.distributed"):
        make_loader(data.splits["train"], batch_size=4, shuffle=True, distributed=True)


def test_distributed_loader_uses_the_process_group(tmp_path):
    import torch.distributed as dist

    data = load_splits("synthetic", max_samples=20)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        bucketed = make_loader(data.splits["train"], batch_size=6, shuffle=True, distributed=True)
        plain = make_loader(data.splits["train"], batch_size=6, shuffle=False, bucketing=False, distributed=True)
        assert isinstance(plain.sampler, torch.utils.data.DistributedSampler)
        for loader in (bucketed, plain):
            ids = [i for b in loader for i in b.ids]
            assert sorted(ids) == sorted(data.splits["train"].ids)
        loader = make_loader(data.splits["train"], batch_size=6, shuffle=True, bucketing=False, distributed=True)
        loader.set_epoch(3)
        list(loader)
        assert loader.sampler.epoch == 3
    finally:
        dist.destroy_process_group()


@settings(max_examples=15, deadline=None)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6), padding=st.sampled_from(["dynamic", "fixed"]))
def test_collate_masks_match_lengths(lengths, padding):
    from fusionkit.data.dataset import Example

    examples = [Example(np.arange(n) + 1, np.ones((n, 3), np.float32), np.ones((n, 2), np.float32), 0.0, str(i))
                for i, n in enumerate(lengths)]
    batch = collate(examples, padding=padding, max_seq_length=10)
    width = max(lengths) if padding == "dynamic" else 10
    assert batch.input_ids.shape == (len(lengths), width)
    assert batch.attention_mask.sum(1).tolist() == lengths
    assert torch.equal(batch.acoustic[..., 0].bool(), batch.attention_mask)
    assert torch.equal(batch.input_ids.bool(), batch.attention_mask)
