"""Tests of the procedural localization benchmark (masksal.data.benchmark / sources)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from masksal.data import sources
from masksal.data.benchmark import CLASS_NAMES, BenchmarkDataset, class_names, generate
from masksal.types import collate


@pytest.fixture(scope="module")
def test64() -> dict[str, np.ndarray]:
    return generate("test", 200, size=64, seed=0, return_sources=True)


def test_same_seed_same_bytes_and_different_seed_differs() -> None:
    a = generate("train", 40, size=48, seed=3)
    b = generate("train", 40, size=48, seed=3)
    c = generate("train", 40, size=48, seed=4)
    for key in ("images", "labels", "boxes", "masks"):
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["images"], c["images"])
    assert not np.array_equal(a["masks"], c["masks"])


def test_single_index_equals_batch_row(test64: dict[str, np.ndarray]) -> None:
    for i in (0, 7, 123, 199):
        one = generate("test", 1, size=64, seed=0, start=i, return_sources=True)
        for key, value in one.items():
            assert np.array_equal(value[0], test64[key][i]), (key, i)
    # Shards in any order assemble into the same arrays.
    parts = [generate("test", 50, size=64, seed=0, start=s) for s in (150, 0, 100, 50)]
    images = np.concatenate([parts[1]["images"], parts[3]["images"], parts[2]["images"], parts[0]["images"]])
    assert np.array_equal(images, test64["images"])


def test_splits_differ_for_same_index() -> None:
    a = generate("train", 5, size=32)
    b = generate("val", 5, size=32)
    assert not np.array_equal(a["images"], b["images"])


@pytest.mark.parametrize("size", [32, 64, 224])
def test_shapes_dtypes_ranges(size: int) -> None:
    n = 60 if size < 224 else 24
    out = generate("val", n, size=size, seed=1)
    assert out["images"].shape == (n, size, size, 3) and out["images"].dtype == np.uint8
    assert out["labels"].shape == (n,) and out["labels"].dtype == np.int64
    assert out["boxes"].shape == (n, 4) and out["boxes"].dtype == np.float32
    assert out["masks"].shape == (n, size, size) and out["masks"].dtype == np.uint8
    assert set(np.unique(out["masks"])) <= {0, 1}
    assert out["labels"].min() >= 0 and out["labels"].max() < len(CLASS_NAMES)
    boxes = out["boxes"]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= size - 1).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    # The object is sizeable: its longer box side is a large fraction of the image.
    longer = np.maximum(boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1)
    assert (longer >= 0.3 * size).all() and (longer <= 0.8 * size).all()
    # The images are not blank: backgrounds and objects vary.
    assert out["images"].std() > 20


def test_box_is_tight_box_of_nonempty_mask(test64: dict[str, np.ndarray]) -> None:
    for mask, box in zip(test64["masks"], test64["boxes"], strict=True):
        assert mask.sum() > 0
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


def test_object_is_visible_against_background(test64: dict[str, np.ndarray]) -> None:
    # Mean colour of the object differs from the mean colour of the ring of background around it.
    img = test64["images"].astype(np.float32)
    diffs = []
    for image, mask in zip(img, test64["masks"], strict=True):
        inside = image[mask == 1].mean(0)
        outside = image[mask == 0].mean(0)
        diffs.append(np.abs(inside - outside).max())
    assert np.median(diffs) > 40


def test_labels_cover_all_classes_and_names(test64: dict[str, np.ndarray]) -> None:
    assert np.array_equal(np.bincount(test64["labels"], minlength=20), np.full(20, 10))
    assert len(CLASS_NAMES) == 20
    assert CLASS_NAMES[:10] == tuple(f"digit {d}" for d in range(10))
    assert CLASS_NAMES[10] == "bear" and CLASS_NAMES[19] == "zebra"
    digits = generate("test", 30, size=32, families=("digits",))
    assert set(digits["labels"].tolist()) == set(range(10))
    assert class_names(("animals",)) == CLASS_NAMES[10:]
    animals = generate("test", 20, size=32, families=("animals",), return_sources=True)
    assert set(animals["labels"].tolist()) == set(range(10))
    assert (animals["sources"] >= sources.ANIMAL_OFFSET).all()


def test_object_source_matches_label(test64: dict[str, np.ndarray]) -> None:
    digit_labels = sources.load_digits()[1]
    animal_labels = sources.load_animals()[1]
    for label, src in zip(test64["labels"], test64["sources"], strict=True):
        if label < 10:
            assert src < sources.ANIMAL_OFFSET and digit_labels[src] == label
        else:
            assert src >= sources.ANIMAL_OFFSET and animal_labels[src - sources.ANIMAL_OFFSET] == label - 10


def test_split_pools_are_disjoint_and_sized() -> None:
    for family in ("digits", "animals"):
        src = sources.object_source(family)
        ids = {s: set(src.global_ids[np.concatenate(src.pools[s])].tolist()) for s in sources.SPLITS}
        assert not ids["train"] & ids["val"]
        assert not ids["train"] & ids["test"]
        assert not ids["val"] & ids["test"]
    digits = sources.object_source("digits")
    assert sum(p.size for p in digits.pools["train"]) == 55000
    assert sum(p.size for p in digits.pools["val"]) == 5000
    assert min(src_ids.min() for src_ids in digits.pools["test"]) == sources.MNIST_TRAIN
    animals = sources.object_source("animals")
    assert [p.size for p in animals.pools["train"]] == [800] * 10
    assert [p.size for p in animals.pools["val"]] == [100] * 10
    assert [p.size for p in animals.pools["test"]] == [100] * 10


def test_generated_sources_respect_splits() -> None:
    used = {}
    for split in sources.SPLITS:
        out = generate(split, 300, size=32, seed=0, return_sources=True)
        d = out["distractor_sources"]
        assert ((d == -1) | (d != out["sources"][:, None])).all()  # distractors are other objects
        assert ((d >= 0).sum(1) >= 1).all()
        used[split] = set(out["sources"].tolist()) | set(d[d >= 0].tolist())
    assert not used["train"] & used["test"]
    assert not used["train"] & used["val"]
    assert not used["val"] & used["test"]
    assert max(i for i in used["train"] if i < sources.ANIMAL_OFFSET) < sources.DIGIT_VAL_START
    assert min(i for i in used["test"] if i < sources.ANIMAL_OFFSET) >= sources.MNIST_TRAIN


def test_distractor_count_is_bounded() -> None:
    out = generate("train", 60, size=32, return_sources=True)
    count = (out["distractor_sources"] >= 0).sum(1)
    assert out["distractor_sources"].shape == (60, 2) and count.min() == 1 and count.max() == 2
    one = generate("train", 20, size=32, return_sources=True, max_distractors=1)
    assert one["distractor_sources"].shape == (20, 1) and (one["distractor_sources"] >= 0).all()
    none = generate("train", 20, size=32, return_sources=True, max_distractors=0)
    assert none["distractor_sources"].shape == (20, 0)
    assert np.array_equal(np.bincount(none["labels"]), np.ones(20))


def test_size_and_argument_errors() -> None:
    for size in (31, 225, 0, 64.0):
        with pytest.raises(ValueError, match="size must be an integer from 32 to 224"):
            generate("train", 1, size=size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        generate("dev", 1)
    with pytest.raises(ValueError, match="families"):
        generate("train", 1, families=("letters",))
    with pytest.raises(ValueError, match=">= 0"):
        generate("train", -1)
    with pytest.raises(ValueError, match="max_distractors"):
        generate("train", 1, max_distractors=-1)
    with pytest.raises(ValueError, match="size"):
        BenchmarkDataset("train", n=2, size=16)
    with pytest.raises(ValueError, match="examples_per_class"):
        BenchmarkDataset("train", size=32, examples_per_class=0)


def test_dataset_items_and_collate() -> None:
    ds = BenchmarkDataset("val", n=30, size=32, seed=2)
    assert len(ds) == 30 and ds.num_classes == 20 and ds.classes == CLASS_NAMES
    item = ds[5]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["boxes"].shape == (1, 4) and item["boxes"].dtype == torch.float32
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.uint8
    assert item["id"] == "val/5" and item["label"] == 5
    ref = generate("val", 1, size=32, seed=2, start=5)
    assert torch.equal(item["image"], torch.from_numpy(ref["images"][0]).permute(2, 0, 1).float() / 255)
    batch = collate([ds[i] for i in range(4)])
    assert batch.images.shape == (4, 3, 32, 32)
    assert batch.masks is not None and batch.masks.shape == (4, 32, 32)
    assert batch.ids == ["val/0", "val/1", "val/2", "val/3"]


def test_few_shot_keeps_first_k_per_class() -> None:
    ds = BenchmarkDataset("train", size=32, seed=0, examples_per_class=3)
    assert len(ds) == 60
    assert np.array_equal(np.bincount(ds.labels, minlength=20), np.full(20, 3))
    # The first K of each class in generator order, and the same images as a direct generation.
    full = generate("train", int(ds.indices.max()) + 1, size=32, seed=0)
    for c in range(20):
        first = np.flatnonzero(full["labels"] == c)[:3]
        assert np.array_equal(ds.indices[ds.labels == c], first)
    assert np.array_equal(ds.images, full["images"][ds.indices])
    digits = BenchmarkDataset("test", size=32, families=("digits",), examples_per_class=2)
    assert np.array_equal(np.bincount(digits.labels), np.full(10, 2)) and digits.num_classes == 10


def test_cache_roundtrip(tmp_path: Path) -> None:
    a = BenchmarkDataset("test", n=12, size=32, seed=5, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    b = BenchmarkDataset("test", n=12, size=32, seed=5, cache_dir=tmp_path)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.indices, b.indices)
    # The cache is really read: a marked file is returned as stored.
    with np.load(files[0]) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["labels"] = arrays["labels"] + 100
    with open(files[0], "wb") as f:
        np.savez(f, **arrays)
    c = BenchmarkDataset("test", n=12, size=32, seed=5, cache_dir=tmp_path)
    assert (c.labels >= 100).all()
    # Different parameters use a different file.
    BenchmarkDataset("test", n=12, size=32, seed=6, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2


@pytest.mark.parametrize("fault", ["truncate", "garbage", "empty", "missing key", "wrong shape"])
def test_corrupt_cache_is_regenerated_atomically(tmp_path: Path, fault: str) -> None:
    fresh = BenchmarkDataset("test", n=12, size=32, seed=5, cache_dir=tmp_path)
    assert fresh.cache_rebuilt is None
    (path,) = tmp_path.glob("*.npz")
    data = path.read_bytes()
    if fault == "truncate":  # a copy cut short, a full disk
        path.write_bytes(data[: len(data) // 2])
    elif fault == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif fault == "empty":
        path.write_bytes(b"")
    else:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        if fault == "missing key":
            del arrays["masks"]
        else:
            arrays["images"] = arrays["images"][:5]
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    again = BenchmarkDataset("test", n=12, size=32, seed=5, cache_dir=tmp_path)
    assert again.cache_rebuilt is not None and again.cache_rebuilt.startswith(f"{path}: ")
    assert "\n" not in again.cache_rebuilt
    for key in ("images", "labels", "boxes", "masks", "indices"):
        assert np.array_equal(getattr(again, key), getattr(fresh, key)), key
    # The file was replaced by a whole one (no temporary left) and is read back as is.
    assert not list(tmp_path.glob("*.tmp")) and len(list(tmp_path.glob("*.npz"))) == 1
    third = BenchmarkDataset("test", n=12, size=32, seed=5, cache_dir=tmp_path)
    assert third.cache_rebuilt is None and np.array_equal(third.images, fresh.images)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo should-not-run",))


@pytest.mark.parametrize("payload", [_Evil(), eval], ids=["os.system", "builtins.eval"])
def test_unpickler_rejects_other_globals(payload: object) -> None:
    data = pickle.dumps(payload)
    with pytest.raises(sources.UnsafePickleError, match="refusing to unpickle global"):
        sources.load_numpy_pickle(data)


def test_unpickler_reads_numpy_arrays_and_rejects_non_arrays() -> None:
    arr = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert np.array_equal(sources.load_numpy_pickle(pickle.dumps(arr)), arr)
    blob = gzip.compress(pickle.dumps(np.zeros((2, 28, 28), np.uint8)))
    assert sources.load_numpy_pickle(gzip.decompress(blob)).shape == (2, 28, 28)
    with pytest.raises(TypeError, match="numpy array"):
        sources.load_numpy_pickle(pickle.dumps([1, 2]))
    with pytest.raises(sources.UnsafePickleError):
        sources.NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(np.float64(1.0)))).load()


def test_missing_animal_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "ANIMAL_RESOURCE", ("animal_mnist_not_installed", "data"))
    sources.load_animals.cache_clear()
    sources.object_source.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install --no-deps animal-mnist==0\.4"):
            generate("train", 1, size=32)
        assert not sources.animals_available()
        assert generate("train", 2, size=32, families=("digits",))["labels"].tolist() == [0, 1]
    finally:
        sources.load_animals.cache_clear()
        sources.object_source.cache_clear()


def test_dataset_start_offset_gives_the_generator_images_from_there():
    from masksal.data.benchmark import BenchmarkDataset, generate

    ds = BenchmarkDataset("train", n=6, size=32, families=("digits",), start=10)
    ref = generate("train", 6, 32, 0, ("digits",), 10)
    assert np.array_equal(ds.images, ref["images"])
    assert ds[0]["id"] == "train/10"


# -- the two-object split ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs64() -> dict[str, np.ndarray]:
    return generate("test", 120, size=64, seed=0, objects=2, return_sources=True)


def test_pairs_have_two_objects_of_different_classes(pairs64: dict[str, np.ndarray]) -> None:
    labels = pairs64["labels"]
    assert labels.shape == (120, 2) and labels.dtype == np.int64
    assert (labels[:, 0] != labels[:, 1]).all()
    assert np.array_equal(labels[:, 0], np.arange(120) % 20)  # balanced by the first object
    assert len(set(labels[:, 1].tolist())) == 20  # the other class drawn among all the others
    assert pairs64["boxes"].shape == (120, 2, 4) and pairs64["masks"].shape == (120, 2, 64, 64)
    assert pairs64["sources"].shape == (120, 2)
    digit_labels, animal_labels = sources.load_digits()[1], sources.load_animals()[1]
    for label, src in zip(labels.reshape(-1), pairs64["sources"].reshape(-1), strict=True):  # each from its class
        if label < 10:
            assert src < sources.ANIMAL_OFFSET and digit_labels[src] == label
        else:
            assert src >= sources.ANIMAL_OFFSET and animal_labels[src - sources.ANIMAL_OFFSET] == label - 10


def test_pairs_boxes_are_tight_boxes_of_disjoint_masks(pairs64: dict[str, np.ndarray]) -> None:
    masks, boxes = pairs64["masks"], pairs64["boxes"]
    assert set(np.unique(masks)) <= {0, 1}
    assert not (masks[:, 0] & masks[:, 1]).any()  # no pixel belongs to both objects
    for i in range(masks.shape[0]):
        for k in range(2):
            ys, xs = np.nonzero(masks[i, k])
            assert ys.size > 0
            assert boxes[i, k].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
        # Rectangles apart: the two boxes do not intersect, so a box can match only one object.
        a, b = boxes[i]
        assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], i
        side = max(boxes[i, :, 2] - boxes[i, :, 0] + 1) / 64
        assert side <= 0.5 + 1 / 64


def test_pairs_are_deterministic_and_apart_from_the_single_object_images(pairs64: dict[str, np.ndarray]) -> None:
    again = generate("test", 5, size=64, seed=0, objects=2, start=40)
    for key in ("images", "labels", "boxes", "masks"):
        assert np.array_equal(again[key], pairs64[key][40:45]), key
    single = generate("test", 5, size=64, seed=0)
    assert not np.array_equal(single["images"], pairs64["images"][:5])
    with pytest.raises(ValueError, match="objects"):
        generate("test", 1, size=64, objects=3)


def test_pairs_dataset_yields_each_object_as_the_request(tmp_path: Path) -> None:
    ds = BenchmarkDataset("val", n=6, size=48, objects=2, cache_dir=tmp_path)
    ref = generate("val", 6, size=48, seed=0, objects=2)
    assert len(ds) == 12
    for i in range(12):
        k, j = divmod(i, 2)
        s = ds[i]
        assert s["id"] == f"val/{k}/{j}"
        assert torch.equal(s["image"], torch.from_numpy(ref["images"][k]).permute(2, 0, 1).float() / 255)
        assert s["label"] == int(ref["labels"][k, j]) == int(s["object_labels"][j])
        assert s["object_labels"].tolist() == ref["labels"][k].tolist()
        assert torch.equal(s["boxes"][0], s["object_boxes"][j]) and s["boxes"].shape == (1, 4)
        assert torch.equal(s["mask"], s["object_masks"][j])
        assert torch.equal(s["object_masks"], torch.from_numpy(ref["masks"][k]))
    batch = collate([ds[i] for i in range(4)])
    assert batch.labels.tolist() == [int(v) for v in ref["labels"][:2].reshape(-1)]
    assert batch.object_labels is not None and batch.object_boxes is not None and batch.object_masks is not None
    first, second = ref["labels"][0].tolist(), ref["labels"][1].tolist()
    assert [t.tolist() for t in batch.object_labels] == [first, first, second, second]
    assert batch.positives(20).sum(1).tolist() == [2.0] * 4  # both objects are positive labels
    assert batch.head(3).object_masks is not None and len(batch.head(3).object_masks) == 3
    cached = BenchmarkDataset("val", n=6, size=48, objects=2, cache_dir=tmp_path)
    assert cached.cache_rebuilt is None and np.array_equal(cached.masks, ds.masks)
    assert len(list(tmp_path.glob("*-m2-*.npz"))) == 1  # its own cache file, apart from the single-object ones
    # The single-object split keeps its sample dicts: no object fields, and collate leaves them None.
    single = BenchmarkDataset("val", n=2, size=48)
    assert "object_labels" not in single[0] and collate([single[0], single[1]]).object_labels is None


def test_benchmark_pairs_spec() -> None:
    from masksal.data import load_dataset

    ds = load_dataset("benchmark:pairs", split="test", size=32, n=3)
    assert isinstance(ds, BenchmarkDataset) and ds.objects == 2 and len(ds) == 6
    with pytest.raises(ValueError, match="benchmark:pairs"):
        load_dataset("benchmark:triples", split="test", size=32, n=3)


def test_mixed_benchmark_and_mixed_batches() -> None:
    from masksal.config import load_config
    from masksal.data.benchmark import MixedBenchmark
    from masksal.training import build_dataset

    cfg = load_config(None, ["data.dataset=benchmark:mixed", "data.n_train=8", "data.image_size=32",
                             "data.cache_dir=null"])
    ds = build_dataset(cfg, "train")
    assert isinstance(ds, MixedBenchmark) and len(ds) == 4 + 2 * 2 and ds.num_classes == 20
    assert "object_labels" not in ds[3] and "object_labels" in ds[4]
    batch = collate([ds[i] for i in (3, 4, 5)])  # one single-object image, both requests of a pair image
    assert batch.object_labels is not None and batch.object_boxes is not None and batch.object_masks is not None
    assert batch.object_labels[0].tolist() == [ds[3]["label"]]  # a single object: its label, box and mask
    assert torch.equal(batch.object_boxes[0], ds[3]["boxes"]) and torch.equal(batch.object_masks[0][0], ds[3]["mask"])
    assert len(batch.object_labels[1]) == 2 and batch.object_masks[1].shape == (2, 32, 32)
    with pytest.raises(ValueError, match="benchmark:mixed"):
        MixedBenchmark(BenchmarkDataset("train", n=2, size=32), BenchmarkDataset("train", n=2, size=48, objects=2))
