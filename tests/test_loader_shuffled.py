"""TRAIN_LOADER=shuffled: random seq-len windows of the training shards, deterministic per seed,
replayable by reset(), the same global batch for any world size, no window twice in an epoch."""
import numpy as np
import torch

from conftest import SAMPLE

FILES = sorted(str(p) for p in SAMPLE.glob("sotu_train_*.bin"))


def loader(tg, seed=0, world=1, rank=0, seq=64, micro=256):
    return tg.ShuffledSequenceLoader(FILES, tg.Dist(rank, world, rank, torch.device("cpu")), micro, seq, seed)


def batches(ld, n):
    return [ld.next_batch() for _ in range(n)]


def test_windows_are_shard_spans_and_targets_shift_inputs(tg):
    shards = [tg.load_shard(f) for f in FILES]
    ld = loader(tg)
    x, y = ld.next_batch()
    assert x.shape == y.shape == (4, 64) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for (i, s), row in zip(ld.windows[:4], x):
        assert torch.equal(row, shards[i][s:s + 64].long())


def test_deterministic_per_seed_and_replayed_by_reset(tg):
    a, b, c = loader(tg, seed=1), loader(tg, seed=1), loader(tg, seed=2)
    first = batches(a, 3)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(first, batches(b, 3)))
    assert not torch.equal(first[0][0], batches(c, 1)[0][0])
    a.reset()
    assert all(torch.equal(p[0], q[0]) for p, q in zip(first, batches(a, 3)))


def test_same_global_batch_for_any_world_size(tg):
    single = batches(loader(tg, world=1), 4)
    r0, r1 = batches(loader(tg, world=2, rank=0), 2), batches(loader(tg, world=2, rank=1), 2)
    for k in range(2):  # call k of a 2-rank run = calls 2k, 2k+1 of one process
        assert torch.equal(r0[k][0], single[2 * k][0]) and torch.equal(r1[k][0], single[2 * k + 1][0])


def test_an_epoch_visits_each_window_once_then_reshuffles(tg):
    ld = loader(tg, seq=512, micro=512)
    n = len(ld.windows)
    keys = {tuple(w) for w in ld.windows}
    assert len(keys) == n  # distinct windows
    seen = []
    for _ in range(n):
        seen.append(tuple(ld.windows[ld.cursor]))
        ld.next_batch()
    assert len(set(seen)) == n
    ld.next_batch()  # the next epoch: new phases and order
    assert ld.cursor == 1 and not np.array_equal(ld.windows[:8], np.array(seen[:8]))


def test_config_picks_the_loader(tg):
    from test_model_and_muon import cpu, tiny_cfg
    assert isinstance(tg.make_loader(tiny_cfg(tg), FILES, cpu(tg), 256), tg.ShuffledSequenceLoader)  # the default
    cfg = tiny_cfg(tg, TRAIN_LOADER="stream")
    assert type(tg.make_loader(cfg, FILES, cpu(tg), 256)) is tg.DistributedTokenLoader
