"""The trainer's shard reader and loader: clear errors, and a global batch independent of world size."""
import numpy as np
import pytest
import torch

from conftest import SAMPLE


def write_shard(path, tokens, magic=20240520, version=1, n=None):
    header = np.zeros(256, dtype="<i4")
    header[:3] = [magic, version, len(tokens) if n is None else n]
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())
    return path


def test_reads_a_valid_shard(tg, tmp_path):
    t = tg.load_shard(write_shard(tmp_path / "a.bin", [1, 5, 65535, 7]))
    assert t.tolist() == [1, 5, 65535, 7] and t.dtype == torch.int32


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(magic=123), r"bad magic 123"),
    (dict(version=2), r"unsupported version 2"),
    (dict(n=10), r"header says 10 tokens .*\(truncated or corrupt\)"),
])
def test_bad_shards_raise_clear_errors(tg, tmp_path, kwargs, pattern):
    path = write_shard(tmp_path / "bad.bin", [1, 2, 3], **kwargs)
    with pytest.raises(ValueError, match=pattern) as e:
        tg.load_shard(path)
    assert "bad.bin" in str(e.value)


def test_short_and_missing_files(tg, tmp_path):
    (tmp_path / "short.bin").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="shorter than"):
        tg.load_shard(tmp_path / "short.bin")
    with pytest.raises(FileNotFoundError, match="nope.bin does not exist"):
        tg.load_shard(tmp_path / "nope.bin")


def test_empty_glob_and_missing_dir(tg, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no train shards match .*fineweb_train_\*\.bin .*TRAIN_GLOB"):
        tg.shard_files(str(tmp_path), "fineweb_train_*.bin", "train")
    with pytest.raises(FileNotFoundError, match="DATA_PATH=.* is not a directory"):
        tg.shard_files(str(tmp_path / "missing"), "*.bin", "train")


def test_stream_wraps_across_shards(tg, tmp_path):
    a = write_shard(tmp_path / "s0.bin", [0, 1, 2])
    b = write_shard(tmp_path / "s1.bin", [3, 4])
    s = tg.TokenStream([str(a), str(b)])
    assert s.take(4).tolist() == [0, 1, 2, 3]
    assert s.take(4).tolist() == [4, 0, 1, 2]


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_global_batch_is_identical_for_any_world_size(tg, world):
    """Collect the sequences of one optimizer step (8 micro-batches) as every rank would see them."""
    files = sorted(str(p) for p in SAMPLE.glob("sotu_train_*.bin"))
    seq, micro = 32, 64
    seen = {}
    for rank in range(world):
        ctx = tg.Dist(rank, world, rank, torch.device("cpu"))
        loader = tg.DistributedTokenLoader(files, ctx, micro, seq)
        for accum in range(8 // world):
            x, y = loader.next_batch()
            seen[accum * world + rank] = (x, y)  # micro-batch index within the global step
    ref_loader = tg.DistributedTokenLoader(files, tg.Dist(0, 1, 0, torch.device("cpu")), micro, seq)
    for j in range(8):
        x, y = ref_loader.next_batch()
        assert torch.equal(seen[j][0], x) and torch.equal(seen[j][1], y)
        assert torch.equal(x[:, 1:], y[:, :-1])
