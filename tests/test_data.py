from __future__ import annotations

import numpy as np
import pytest

from hpo.config import DataConfig
from hpo.data import ArrayBatches, discover, load_dataset
from hpo.errors import DataError
from hpo.testing import make_image_folder


def test_class_folders_split_70_15_15_stratified_and_seeded(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=40, size=8)
    index = discover(root, fractions=(0.7, 0.15, 0.15), seed=3)
    assert index.layout == "class-folders"
    assert index.classes == ("cats", "dogs")
    counts = {s: np.bincount([label for _, label in f]) for s, f in index.files.items()}
    assert counts["train"].tolist() == [28, 28]
    assert counts["validation"].tolist() == [6, 6]
    assert counts["test"].tolist() == [6, 6]
    again = discover(root, fractions=(0.7, 0.15, 0.15), seed=3)
    assert again.files == index.files
    other = discover(root, fractions=(0.7, 0.15, 0.15), seed=4)
    assert other.files["test"] != index.files["test"]
    all_files = [p for f in index.files.values() for p, _ in f]
    assert len(all_files) == len(set(all_files)) == 80


def test_pre_split_layout(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=3, size=8, layout="pre-split")
    index = discover(root, fractions=(0.7, 0.15, 0.15), seed=0)
    assert index.layout == "pre-split"
    assert {s: len(f) for s, f in index.files.items()} == {"train": 6, "validation": 6,
                                                           "test": 6}


def test_thesis_layout_maps_test_t_and_test_f_to_their_classes(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("False", "True"), per_class=3, size=8,
                             layout="thesis")
    assert sorted(p.name for p in root.iterdir()) == ["Test_F", "Test_T", "Train", "Validation"]
    index = discover(root, fractions=(0.7, 0.15, 0.15), seed=0)
    assert index.layout == "thesis"
    assert index.classes == ("False", "True")
    for path, label in index.files["test"]:
        assert path.parent.name == ("Test_T" if label == 1 else "Test_F")
    assert len(index.files["test"]) == 6


@pytest.mark.parametrize("setup, fragment", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "holds no images"),
    (lambda p: make_image_folder(p, classes=("only",), per_class=3, size=8),
     "needs at least 2 class folders"),
])
def test_bad_folders_raise_one_clear_line(tmp_path, setup, fragment):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=fragment) as info:
        discover(root, fractions=(0.7, 0.15, 0.15), seed=0)
    assert "\n" not in str(info.value)


def test_corrupt_images_are_skipped_with_a_count_or_fail_under_strict(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d", per_class=10, size=8, corrupt=2)
    data = DataConfig(source=str(root))
    with caplog.at_level("WARNING", logger="hpo.data"):
        dataset = load_dataset(data, (8, 8), cache_dir=tmp_path / "cache")
    assert len(dataset.skipped) == 4
    assert "skipped 4 unreadable image(s)" in caplog.text
    total = len(dataset.train) + len(dataset.validation) + len(dataset.test)
    assert total == 20
    with pytest.raises(DataError, match="cannot read image .*broken_.*without strict"):
        load_dataset(data, (8, 8), cache_dir=tmp_path / "cache-strict", strict=True)


def test_images_are_decoded_once_into_a_memory_mapped_uint8_cache(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "d", per_class=10, size=12)
    data = DataConfig(source=str(root), channels=1)
    first = load_dataset(data, (10, 10), cache_dir=tmp_path / "cache")
    assert isinstance(first.train.x, np.memmap)
    assert first.train.x.dtype == np.uint8
    assert first.input_shape == (10, 10, 1)

    import hpo.data._cache as cache

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache exists")

    monkeypatch.setattr(cache, "decode_image", no_decoding)
    second = load_dataset(data, (10, 10), cache_dir=tmp_path / "cache")
    assert second.cache == first.cache
    np.testing.assert_array_equal(second.train.x, first.train.x)
    # A changed file invalidates the entry.
    victim = next((root / "cats").iterdir())
    victim.write_bytes(victim.read_bytes())
    import os

    os.utime(victim, ns=(1, 1))
    monkeypatch.undo()
    third = load_dataset(data, (10, 10), cache_dir=tmp_path / "cache")
    assert third.cache != first.cache


def test_bundled_digits_need_no_download(tmp_path):
    dataset = load_dataset(DataConfig(source="bundled:digits", channels=3), (16, 16),
                           cache_dir=tmp_path / "cache")
    assert dataset.classes == tuple(str(i) for i in range(10))
    assert dataset.input_shape == (16, 16, 3)
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == 1797
    assert dataset.train.x.max() > 200


def test_batches_cover_every_row_once_per_epoch_and_reshuffle():
    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    y = np.arange(10)
    batches = ArrayBatches(x, y, batch_size=4, shuffle=True, seed=0, workers=1,
                           dtype=np.float32)
    assert len(batches) == 3
    first = [batches[i] for i in range(len(batches))]
    assert sorted(np.concatenate([b[1] for b in first]).tolist()) == list(range(10))
    assert first[0][0].dtype == np.float32
    for bx, by in first:
        np.testing.assert_array_equal(bx.reshape(-1), by.astype(np.float32))
    batches.on_epoch_end()
    second = [batches[i][1].tolist() for i in range(len(batches))]
    assert second != [b[1].tolist() for b in first]


def test_a_class_whose_images_are_all_unreadable_stops_the_study(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", classes=("pistol", "phone"), per_class=10)
    for image in (folder / "phone").iterdir():
        image.write_bytes(b"not an image")
    with pytest.raises(DataError, match="class 'phone' of .* has no readable image in the "
                                        r"training split \(10 unreadable"):
        load_dataset(DataConfig(source=str(folder)), (16, 16), cache_dir=tmp_path / "c")
