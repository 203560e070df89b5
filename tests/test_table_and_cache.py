"""The per-example table as a contract (concat by global index, align, column metadata in examples.npz),
the block rule, the resume cache's integrity checks, and validation before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.engine import shard
from audit.engine.cache import RowCache, fill_cached
from audit.engine.table import ExampleTable, Merger, Part
from conftest import DIGITS_DATA, DIGITS_MODEL, run_cli


def _table(index, extra=0.0) -> ExampleTable:
    t = ExampleTable()
    t.add("index", np.asarray(index, dtype=np.int64))
    t.add("label", np.asarray(index, dtype=np.int64) % 3)
    t.add("score", np.asarray(index, dtype=np.float64) + extra, {"kind": "test", "unit": "points"})
    t.add("logits", np.stack([np.asarray(index, np.float32)] * 2, axis=1))
    t.categories["g"] = ["a", "b"]
    return t


def test_concat_sorts_by_global_index_and_refuses_duplicates():
    a, b = _table([5, 1, 9]), _table([2, 7])
    t = ExampleTable.concat([a, b])
    assert t["index"].tolist() == [1, 2, 5, 7, 9]
    assert t["score"].tolist() == [1.0, 2.0, 5.0, 7.0, 9.0]
    assert t["logits"].shape == (5, 2) and t["logits"][:, 0].tolist() == [1, 2, 5, 7, 9]
    assert t.column_meta["score"] == {"kind": "test", "unit": "points"}
    with pytest.raises(ValueError, match="example index 5 appears in more than one table"):
        ExampleTable.concat([a, _table([5, 6])])
    c = _table([3])
    c.add("extra", np.zeros(1))
    with pytest.raises(ValueError, match="different columns \\(extra\\)"):
        ExampleTable.concat([a, c])


def test_align_pairs_two_audits_on_their_shared_examples():
    a, b = _table([4, 1, 3, 8]), _table([3, 9, 4, 0], extra=0.5)
    x, y = a.align(b)
    assert x["index"].tolist() == y["index"].tolist() == [3, 4]
    assert y["score"].tolist() == [3.5, 4.5] and x["score"].tolist() == [3.0, 4.0]


def test_column_metadata_round_trips_through_examples_npz(tmp_path):
    t = _table([0, 1, 2])
    t.save(tmp_path / "examples.npz", meta={"run_id": "r1"})
    back = ExampleTable.load(tmp_path / "examples.npz")
    assert back.column_meta == {"score": {"kind": "test", "unit": "points"}}
    assert back.meta["run_id"] == "r1" and sorted(back.columns) == sorted(t.columns)
    with np.load(tmp_path / "examples.npz") as z:  # readable without audit: JSON in a string array
        assert json.loads(str(z["colmeta:score"])) == {"kind": "test", "unit": "points"}


def test_blocks_are_dealt_round_robin_without_padding():
    blocks = shard.blocks(10, 4)
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    owner = shard.owners(len(blocks), 2)
    r0 = [i for i, r in enumerate(owner) if r == 0]
    r1 = [i for i, r in enumerate(owner) if r == 1]
    assert r0 == [0, 2] and r1 == [1]
    covered = np.sort(np.concatenate([blocks[i] for i in r0] + [blocks[i] for i in r1]))
    assert covered.tolist() == list(range(10))
    # with costs: costliest first, each to the least-loaded rank
    assert shard.owners(4, 2, [1.0, 5.0, 3.0, 2.0]) == [0, 0, 1, 1]  # loads 5+1 and 3+2
    # a whole number of batches; at least 32 blocks when the data allows; at most 4 batches a block
    assert shard.block_size(None, 450, 256) == 256  # small data: one batch a block
    assert shard.block_size(None, 20_000, 256) == 768  # 27 blocks (3 batches each)
    assert shard.block_size(None, 1_000_000, 256, 128) == 1024
    assert shard.block_size(100, 10**6, 4096) == 100  # [run] block_rows as given


def _merged(parts, n, dense):
    m = Merger(n, dense)
    for p in parts:
        m.add(p)
    return m.done()


def test_merger_fills_checks_sparsely_and_rejects_overlaps():
    p1 = Part(np.array([0, 1]), {"v": np.array([1.0, 2.0]), "ok": np.array([True, False])}, {}, {"n": 2})
    p2 = Part(np.array([4]), {"v": np.array([5.0]), "ok": np.array([True])}, {}, {"n": 1})
    cols, _, partials = _merged([p1, p2], 5, dense=False)
    assert np.array_equal(cols["v"], [1.0, 2.0, np.nan, np.nan, 5.0], equal_nan=True)
    assert cols["ok"].tolist() == [True, False, False, False, True]
    assert partials == [{"n": 2}, {"n": 1}]  # in the order given (the runner gives item order, on every rank)
    with pytest.raises(ValueError, match="row 2 of column 'v' is filled 0 times"):
        _merged([p1, p2], 5, dense=True)
    with pytest.raises(ValueError, match="row 1 of column 'v' is filled 2 times"):
        _merged([p1, Part(np.array([1]), {"v": np.array([0.0]), "ok": np.array([True])})], 5, dense=False)
    # two tasks on the same rows, other columns: fine
    cols, _, _ = _merged([p1, Part(np.array([0, 1]), {"w": np.array([7, 8])})], 5, dense=False)
    assert cols["w"].tolist() == [7, 8, -1, -1, -1] and cols["v"][0] == 1.0


def test_cache_detects_damage_and_other_audits(tmp_path):
    notices: list[str] = []
    key = {"model_sha256": "aa", "seed": 0}
    cache = RowCache.prepare(tmp_path, key, resume=False, notice=notices.append)
    part = Part(np.arange(3), {"x": np.arange(3.0)}, {"x": {"kind": "t"}}, {"s": 1})
    calls = []
    got, cached = fill_cached(cache, "u", 0, lambda: calls.append(1) or part, "rows-1")
    assert calls == [1] and got is part and not cached
    again, cached = fill_cached(cache, "u", 0, lambda: calls.append(1) or part, "rows-1")
    assert calls == [1] and cached and again.columns["x"].tolist() == [0.0, 1.0, 2.0] and again.partials == {"s": 1}
    assert again.column_meta == {"x": {"kind": "t"}}
    # an entry computed from other table rows (the clean pass predicted otherwise) is not read back
    _, cached = fill_cached(cache, "u", 0, lambda: calls.append(1) or part, "rows-2")
    assert not cached and calls == [1, 1] and not notices
    entries = lambda: list(cache.folder.glob("u/000000.*.npz"))  # noqa: E731
    assert len(entries()) == 1  # the new entry replaced the old one
    # a flipped byte: the checksum in the name no longer matches; reported, deleted, recomputed
    (entry,) = entries()
    data = bytearray(entry.read_bytes())
    data[-10] ^= 1
    entry.write_bytes(bytes(data))
    _, cached = fill_cached(cache, "u", 0, lambda: calls.append(1) or part, "rows-2")
    assert not cached and len(notices) == 1 and "is damaged" in notices[0] and entry.name in notices[0]
    # a truncated file (a torn write that somehow got its final name)
    (entry,) = entries()
    entry.write_bytes(entry.read_bytes()[:20])
    assert cache.get("u", 0, "rows-2") is None and "is damaged" in notices[-1]
    # entries live under the key's hash: a cache opened with another key never sees them
    fill_cached(cache, "u", 1, lambda: part, "rows-1")
    other = RowCache(tmp_path / "cache", {"model_sha256": "bb", "seed": 0}, notices.append)
    assert other.get("u", 1, "rows-1") is None
    # resume with another key: ignored, with what differs, and removed
    RowCache.prepare(tmp_path, {"model_sha256": "bb", "seed": 0}, resume=True, notice=notices.append)
    assert "holds rows of another audit (different model_sha256)" in notices[-1]
    assert not list((tmp_path / "cache").glob("*/u/*.npz"))
    # without --resume: emptied silently; and a non-resuming reader reads nothing
    n = len(notices)
    c2 = RowCache.prepare(tmp_path, key, resume=False, notice=notices.append)
    fill_cached(c2, "u", 0, lambda: part, "rows-1")
    assert RowCache(tmp_path / "cache", key, notices.append, readable=False).get("u", 0, "rows-1") is None
    RowCache.prepare(tmp_path, key, resume=False, notice=notices.append)
    assert len(notices) == n and not list((tmp_path / "cache").glob("*/u/*.npz"))


def test_a_typo_in_a_later_suite_stops_before_any_suite_works(digits_checkpoint, write_recipe, tmp_path):
    """[calibration] (which runs after robustness) is validated before robustness attacks anything: exit 2
    at once, and no row was computed."""
    r = write_recipe(DIGITS_MODEL + DIGITS_DATA + '\nlimit = 60\n\n[robustness]\nsteps = 2\n\n'
                     '[calibration]\ntemperature_fit_indices = "fit-split.npy"\n')
    res = run_cli("run", digits_checkpoint, "--recipe", r, "--out", tmp_path / "out", "--quiet")
    assert res.exit_code == 2
    assert "[calibration] temperature_fit_indices = 'fit-split.npy': file not found" in res.stderr
    assert not (tmp_path / "out" / "cache" / "robustness").exists()
    assert not (tmp_path / "out" / "cache" / "core").exists()


def test_resume_and_no_cache_contradict(digits_checkpoint, write_recipe, tmp_path):
    r = write_recipe(DIGITS_MODEL + DIGITS_DATA + "\nlimit = 20\n")
    res = run_cli("run", digits_checkpoint, "--recipe", r, "--out", tmp_path / "out", "--resume", "--no-cache")
    assert res.exit_code == 2
    assert res.stderr.strip() == ("audit: error: --resume and --no-cache contradict each other: --resume reads "
                                  "the cache")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["passed"] is False


def test_no_cache_writes_no_rows_and_gives_the_same_report(digits_checkpoint, write_recipe, tmp_path):
    r = write_recipe(DIGITS_MODEL + DIGITS_DATA + "\nlimit = 40\n\n[robustness]\nsteps = 2\nnoise = {}\n"
                     "check_examples = 10\nbootstrap = 50\n")
    a = run_cli("run", digits_checkpoint, "--recipe", r, "--out", tmp_path / "a", "--quiet")
    b = run_cli("run", digits_checkpoint, "--recipe", r, "--out", tmp_path / "b", "--quiet", "--no-cache")
    assert a.exit_code == b.exit_code
    ra, rb = (json.loads((tmp_path / d / "report.json").read_text()) for d in "ab")
    assert ra["metrics"] == rb["metrics"] and ra["checks"] == rb["checks"]
    assert not (tmp_path / "b" / "cache").exists()
