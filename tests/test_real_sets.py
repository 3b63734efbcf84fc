"""Canonical grids, the shipped real collections and their split, and sets that share no solution grid."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from envs import augmentation, canonical, real_sets, sudoku
from train.held_out import benchmark_set, split

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# ----------------------------------------------------------------------------- canonical form


def _brute_minlex_rows(grid: np.ndarray) -> np.ndarray:
    """The minlex form over a random sample of symmetries is never smaller than canonical()."""
    src, digit = augmentation.random_symmetry(4096, torch.Generator().manual_seed(0))
    images = augmentation.apply(src, digit, torch.from_numpy(grid.astype(np.int64)).expand(4096, 81))[0].numpy()
    # relabel each image so its first row reads 1..9: the smallest relabeling of that arrangement
    out = np.empty(images.shape, np.int8)
    for k, g in enumerate(images):
        m = np.zeros(10, np.int64)
        m[g[:9]] = np.arange(1, 10)
        out[k] = m[g]
    return out


def test_canonical_is_the_same_for_every_symmetric_image_and_differs_between_classes():
    _, s = sudoku.generate(60, "easy", seed=11)
    c = canonical.canonical(s)
    assert c.dtype == np.int8 and c.shape == (60, 81)
    assert np.all(sudoku.is_solution(np.zeros_like(c), c))  # a valid grid ...
    assert np.array_equal(canonical.canonical(c), c)  # ... of the same class, and a fixed point
    for seed in range(3):
        assert np.array_equal(canonical.canonical(sudoku.augment(s, seed=seed)), c)
    assert len({bytes(r) for r in c}) == 60  # 60 random grids: 60 classes (5.5e9 exist)
    assert np.array_equal(c[:, :9], np.tile(np.arange(1, 10, dtype=np.int8), (60, 1)))
    h = canonical.grid_hash(s)
    assert h.dtype == np.uint64 and len(set(h.tolist())) == 60
    assert np.array_equal(canonical.grid_hash(sudoku.augment(s, seed=5)), h)


def test_canonical_is_the_smallest_image():
    _, s = sudoku.generate(3, "medium", seed=2)
    for g, c in zip(s, canonical.canonical(s), strict=True):
        images = _brute_minlex_rows(g)
        smallest = min(bytes(r) for r in images)
        assert bytes(c) <= smallest  # no sampled image is smaller than the minlex form


def test_canonical_refuses_what_is_not_a_solution_grid():
    p, s = sudoku.generate(2, "easy", seed=0)
    for bad, what in ((p, "not a full valid solution grid"), (s[:, :80], "takes full grids")):
        with pytest.raises(ValueError, match=what):
            canonical.canonical(bad)
    broken = s.copy()
    broken[0, [0, 1]] = broken[0, [1, 0]]
    with pytest.raises(ValueError, match=r"grid \[0\]"):
        canonical.canonical(broken)


# ----------------------------------------------------------------------------- the shipped collections


@pytest.mark.parametrize("name, total, test", [("sudoku17", 39_158, 4_000), ("top1465", 465, 200)])
def test_collections_are_the_shared_files_with_one_split_by_line(name, total, test):
    p, s, lines = real_sets.load_part(f"{name}:test")
    assert len(p) == test and lines[0] == total - test + 1 and lines[-1] == total
    assert np.all(sudoku.is_solution(p, s))
    tp, _, tl = real_sets.load_part(name, solve=False)
    assert len(tp) + real_sets.dropped_lines(name) + test == total
    assert not set(tl.tolist()) & set(lines.tolist())
    text = gzip.decompress((real_sets.DATA / real_sets.REAL_SETS[name].file).read_bytes()).decode().splitlines()
    assert len(text) == total and sudoku.format(p[0]).replace("0", ".") in text[lines[0] - 1].replace("0", ".")
    if name == "sudoku17":
        assert ((tp > 0).sum(1) == 17).all()
    shared = SHARED / f"{name}_public.txt"
    if shared.is_file():  # in the workplace: the shipped file is the collection, line for line
        assert shared.read_text().splitlines() == text


def test_no_training_line_shares_a_grid_with_a_test_puzzle():
    held = real_sets.test_grid_hashes()
    for name in real_sets.REAL_SETS:
        _, s, lines = real_sets.load_part(name)
        assert not np.isin(canonical.grid_hash(s[:2000]), held).any()
        assert not np.isin(real_sets.grid_hashes(name, lines), held).any()
    _, s, lines = real_sets.load_part("top1465:test")
    assert np.array_equal(canonical.grid_hash(s), real_sets.grid_hashes("top1465", lines))


@pytest.mark.slow
def test_the_stored_manifest_is_what_the_files_give():
    manifest, hashes = real_sets.build_manifest()
    assert manifest == json.loads(real_sets.MANIFEST.read_text())
    with np.load(real_sets.GRIDS, allow_pickle=False) as z:
        for name, h in hashes.items():
            assert np.array_equal(z[name], h)


def test_loading_the_17_clue_set_with_its_uniqueness_check_is_fast():
    real_sets._read.cache_clear()
    t = time.perf_counter()
    p, s, _ = real_sets.load_part("sudoku17")
    seconds = time.perf_counter() - t
    assert len(p) > 34_000 and np.all(sudoku.is_solution(p[:100], s[:100]))
    print(f"sudoku17 training part, parsed and checked unique: {seconds:.2f} s")  # a figure for the note, not a test


def test_names_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown part 'dev'"):
        real_sets.parse_spec("sudoku17:dev")
    with pytest.raises(ValueError, match="unknown puzzle collection"):
        real_sets.load_part("sudoku18")
    with pytest.raises(ValueError, match="test part is for evaluation only"):
        split("easy", "sudoku17:test", seed=0, pool_size=8, eval_size=8)
    with pytest.raises(ValueError, match="holds 200 puzzles"):
        benchmark_set("top1465:test", 2, 100)


def test_env_takes_a_collection_by_name():
    import gymnasium as gym

    import envs  # noqa: F401 - registers the ids

    env = gym.make("LatentReasoning-Sudoku-v0", puzzles="top1465:test")
    assert env.unwrapped.pool.source == "collection:top1465:test" and len(env.unwrapped.pool) == 200
    obs, _ = env.reset(seed=0)
    assert obs["puzzle"].shape == (81,)


def test_load_reads_gzip_and_names_a_broken_one(tmp_path):
    good = tmp_path / "p.txt.gz"
    p, _ = sudoku.generate(3, "easy", seed=0)
    good.write_bytes(gzip.compress(("\n".join(sudoku.format(p)) + "\n").encode()))
    assert np.array_equal(sudoku.load(good)[0], p)
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"bad.txt.gz: not a readable gzip file"):
        sudoku.load(bad)


# ----------------------------------------------------------------------------- no shared grid between sets


def test_tiers_of_one_seed_share_no_grid():
    hashes = {t: canonical.grid_hash(sudoku.generate(200 if t != "extreme" else 40, t, seed=0)[1]) for t in sudoku.TIERS}
    seen = np.concatenate(list(hashes.values()))
    assert len(np.unique(seen)) == len(seen)


def test_every_split_drops_training_grids_it_evaluates_on_and_says_how_many(tmp_path):
    # a file whose training part holds symmetric images of its held-out puzzles and of real test puzzles
    p, s = sudoku.generate(40, "medium", seed=3)
    tp, ts, _ = real_sets.load_part("top1465:test")
    images_p, images_s = sudoku.augment(np.concatenate([p[30:35], tp[:3]]), np.concatenate([s[30:35], ts[:3]]), seed=1)
    train_p = np.concatenate([p[:30], images_p])
    lines = sudoku.format(np.concatenate([train_p, p[30:]]))
    # the held-out part is the last 10: p[30:40]
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join(lines) + "\n")
    d = split("easy", str(path), seed=0, pool_size=0, eval_size=10)
    assert d.record["train"]["dropped_shared_grid"] == 8 and len(d.train) == 30
    assert not np.isin(d.train_grids, d.eval_grids).any()
    extra = canonical.grid_hash(s[:2])
    d2 = split("easy", str(path), seed=0, pool_size=0, eval_size=10, exclude=extra)
    assert d2.record["train"]["dropped_shared_grid"] == 10 and d2.record["excluded_grids"] == 2


def test_the_sets_of_one_seed_share_no_grid_across_tiers_scripts_and_collections():
    """Every training set a script builds for seed 0 (warm start, RL pool, supervised pool: all are
    :func:`split`), against every set anything evaluates on (held-out sets, benchmark sets of three
    seeds, the real test parts)."""
    sizes = {"easy": 256, "medium": 256, "hard": 256, "extreme": 24}
    train, evaluated = {}, {}
    for tier, n in sizes.items():
        d = split(tier, None, seed=0, pool_size=n, eval_size=n // 4)
        train[tier], evaluated[f"{tier} held-out"] = d.train_grids, d.eval_grids
        assert d.record["train"]["size"] == len(d.train) and d.record["eval"]["size"] == n // 4
        for s in range(3):
            evaluated[f"{tier} benchmark seed {s}"] = canonical.grid_hash(benchmark_set(tier, s, n // 4)[1])
    for name in real_sets.REAL_SETS:
        d = split("easy", name, seed=0, pool_size=0, eval_size=32)
        train[name], evaluated[f"{name} validation"] = d.train_grids, d.eval_grids
        evaluated[f"{name} test"] = real_sets.grid_hashes(name, real_sets.load_part(f"{name}:test", solve=False)[2])
    shared = {(a, b): int(np.isin(ta, tb).sum()) for a, ta in train.items() for b, tb in evaluated.items()}
    print(f"{len(train)} training sets x {len(evaluated)} evaluated sets; shared grids: {sum(shared.values())}")
    assert {k: v for k, v in shared.items() if v} == {}


# ----------------------------------------------------------------------------- a checkpoint's training grids


@pytest.mark.slow
def test_an_rl_run_records_its_sets_and_never_evaluates_on_a_grid_its_start_trained_on(tmp_path):
    """A DIS start trained on a file whose puzzles include images of the RL run's held-out puzzles:
    the RL run drops those from its held-out set, counts them, and carries the whole lineage."""
    import train.ppo_recursion as ppo
    import train.supervised as supervised
    from train.held_out import EVAL_SEED_OFFSET, trained_grids
    from trm.checkpoint import load_checkpoint

    held_p, held_s = sudoku.generate(8, "easy", seed=EVAL_SEED_OFFSET)  # RL's held-out set (seed 0, eval size 8)
    p, s = sudoku.generate(40, "easy", seed=77)
    images = sudoku.augment(held_p[:3], held_s[:3], seed=2)[0]
    f = tmp_path / "start.txt"
    f.write_text("\n".join(sudoku.format(np.concatenate([images, p]))) + "\n")
    start = tmp_path / "start"
    supervised.train(supervised.parse_args("dis", ["--out", str(start), "--puzzles", str(f), "--eval-size", "8",
                                                   "--steps", "2", "--hidden", "16", "--layers", "1", "--batch-size", "8"]))
    ck = str(start / "checkpoint.pt")
    assert np.isin(canonical.grid_hash(held_s[:3]), trained_grids(load_checkpoint(ck))).all()
    out = tmp_path / "rl"
    m = ppo.main(["--out", str(out), "--init-from", ck, "--updates", "1", "--num-envs", "8", "--pool-size", "32",
                  "--eval-size", "8", "--minutes", "5", "--checkpoint-every", "0", "--no-control-dis", "--puzzles", "",
                  "--reward-mode", "solution", "--objective", "ppo", "--test-set", "", "--no-self-training",
                  "--forward-passes", "0", "--no-parallel-controls"])
    sets = json.loads((out / "run.json").read_text())["sets"]
    print("RL run.json sets:", json.dumps(sets))
    assert sets["eval"]["dropped_trained_by_start"] == 3 and sets["eval"]["size"] == 5
    assert sets["train"]["source"] == "generated:easy" and sets["train"]["size"] + sets["train"]["dropped_shared_grid"] == 32
    assert m["after"]["fixed"]["solve_rate"] * 5 == round(m["after"]["fixed"]["solve_rate"] * 5)  # a share of 5
    lineage = trained_grids(load_checkpoint(out / "checkpoint.pt"))
    assert np.isin(trained_grids(load_checkpoint(ck)), lineage).all() and len(lineage) > len(trained_grids(load_checkpoint(ck)))


def test_the_benchmark_drops_puzzles_a_checkpoint_trained_on(tmp_path, tiny_dis_checkpoint):
    import train.benchmark as benchmark
    from train.held_out import grids_tensor
    from trm.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(tiny_dis_checkpoint)
    ck["train_grids"] = grids_tensor(canonical.grid_hash(benchmark_set("easy", 0, 6)[1][:2]))
    path = tmp_path / "dis.pt"
    save_checkpoint(path, ck)
    payload = benchmark.main(["--out", str(tmp_path / "b"), "--tiers", "easy,top1465:test", "--puzzles", "6", "--seeds", "1",
                              "--agents", "dis", "--checkpoint", f"dis={path}", "--guidance", "1"])
    assert payload["settings"]["trained_grids"]["dropped_trained"] == {"easy:seed=0": 2}
    rows = {r["tier"]: r["puzzles"] for r in payload["rows"]}
    assert rows == {"easy": 4, "top1465:test": 6}


def test_tier_table_describes_every_tier_and_real_part(tmp_path, tiny_dis_checkpoint):
    import train.tier_table as tier_table

    payload = tier_table.main(["--n", "8", "--out", str(tmp_path), "--checkpoint", tiny_dis_checkpoint, "--k", "2",
                               "--peer-seconds", "0.2"])
    rows = {r["set"]: r for r in payload["rows"]}
    assert list(rows) == ["easy", "medium", "hard", "extreme", "sudoku17:test", "top1465:test"]
    assert rows["easy"]["propagation_solves"] == 1.0 and rows["hard"]["propagation_solves"] == 0.0
    assert rows["sudoku17:test"]["clues"] == [17, 17.0, 17] and rows["sudoku17:test"]["per_second"] is None
    assert rows["extreme"]["rating_median"] > rows["hard"]["rating_median"] > rows["medium"]["rating_median"] == 0
    assert rows["easy"]["greedy"]["forward_passes_per_puzzle"] > 0 and "search_k2" in rows["top1465:test"]
    assert (tmp_path / "tiers.md").read_text().count("\n") == 8
