"""bench/make_val_split.py: a validation split of a chosen size made of whole repeated documents."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SAMPLE

sys.path.insert(0, str(REPO / "bench"))
import make_val_split as mv  # noqa: E402


def test_repeat_keeps_whole_documents():
    src = np.array([1, 5, 6, 1, 7], dtype=np.uint16)
    out = mv.repeat_to(src, 12, bos_id=1)
    assert out.tolist() == [1, 5, 6, 1, 7, 1, 5, 6, 1, 7, 1, 5]
    assert mv.repeat_to(src, 3, bos_id=1).tolist() == [1, 5, 6]
    with pytest.raises(ValueError, match="must start with BOS=1"):
        mv.repeat_to(np.array([5, 1], dtype=np.uint16), 4, bos_id=1)


def test_split_is_read_by_the_trainer(tg, tmp_path):
    out = tmp_path / "big"
    dest = mv.make_split(SAMPLE, out, 150_001, "sotu_val_*.bin", bos_id=1)
    original = tg.load_shard(SAMPLE / "sotu_val_000000.bin")
    big = tg.load_shard(dest)
    assert len(big) == 150_001 and len(big) > 2 * len(original)
    assert np.array_equal(big[:len(original)].numpy(), original.numpy())
    assert np.array_equal(big[len(original):2 * len(original)].numpy(), original.numpy())
    assert (out / "sotu_train_000000.bin").is_symlink() and (out / "sotu_1024_bpe.model").exists()
    assert len(tg.shard_files(str(out), "sotu_train_*.bin", "train")) == 2


def test_cli_help_and_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "bench" / "make_val_split.py"), *a],
                                    capture_output=True, text=True)
    assert run("--help").returncode == 0
    bad = run("--src", str(tmp_path), "--out", str(tmp_path / "o"), "--tokens", "100")
    assert bad.returncode != 0 and "no validation shards match" in bad.stderr
    same = run("--src", str(SAMPLE), "--out", str(SAMPLE))
    assert same.returncode == 2 and "--out must differ from --src" in same.stderr
