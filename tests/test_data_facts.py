"""Data is what it looks like: any bit depth scaled to 8 bits by the folder's real range,
hidden files ignored, pre-split layouts recognised from any two split folders, the same
picture in two splits or two classes reported (and refused under ``--strict``)."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from hpo.config import DataConfig
from hpo.data import (
    decode_image,
    discover,
    find_duplicates,
    load_dataset,
    scale_to_uint8,
    survey_folder,
)
from hpo.errors import DataError
from hpo.testing import make_image_folder, write_study
from tests.conftest import run_here

FRACTIONS = (0.7, 0.15, 0.15)


def _all_x(dataset) -> np.ndarray:
    parts = [dataset.train.x, dataset.validation.x]
    if dataset.test is not None:
        parts.append(dataset.test.x)
    return np.concatenate([np.asarray(p) for p in parts])


def _wide_folder(root: Path, *, mode: str = "I;16", per_class: int = 6, size: int = 12,
                 peak: int = 4095, seed: int = 0) -> Path:
    """Two classes of 12-bit-valued (0..peak) stripes: 16-bit grayscale PNGs (``I;16``,
    ``I;16B``) or 32-bit integer TIFFs (``I``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            stripes = (np.arange(size) // 3) % 2 == 0
            base = np.zeros((size, size))
            if label == 0:
                base[stripes, :] = 1.0
            else:
                base[:, stripes] = 1.0
            values = np.clip(base * 0.8 + rng.uniform(0, 0.2, (size, size)), 0, 1) * peak
            array = values.astype(np.uint16 if mode.startswith("I;16") else np.int32)
            if mode == "I;16B":
                image = Image.new("I;16B", (size, size))
                image.frombytes(array.astype(">u2").tobytes())
            else:
                image = Image.fromarray(array)
            image.save(root / name / f"{name}_{i}.{'tif' if mode == 'I' else 'png'}")
    return root


def _png16_rgb(path: Path, values: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow writes no 16-bit colour)."""
    height, width, _ = values.shape
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# -- bit depth --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_a_wide_grayscale_folder_is_scaled_by_its_range_not_clipped(tmp_path, mode):
    root = _wide_folder(tmp_path / "d", mode=mode)
    dataset = load_dataset(DataConfig(source=str(root), channels=1), (12, 12),
                           cache_dir=tmp_path / "cache")
    x = _all_x(dataset)
    assert x.min() == 0 or x.min() < 60  # the noise floor, not 255 everywhere
    assert x.max() == 255
    assert len(np.unique(x)) > 50  # 12-bit values use the 256 levels, not 16 of them
    assert (x == 255).mean() < 0.2  # before: every pixel above 255 clipped to 255
    # stripes survive: the class is learnable
    first = dataset.train.x[dataset.train.y == 0][0, :, :, 0].astype(float)
    assert first.mean(axis=1).std() > 3 * first.mean(axis=0).std()
    assert dataset.facts["wide_images"]["images"] == 12
    assert dataset.facts["wide_images"]["high"] <= 4095


def test_wide_images_share_one_scale_so_they_stay_comparable(tmp_path):
    from PIL import Image

    for name, peak in (("dim", 1000), ("bright", 4000)):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(3):
            values = np.full((4, 4), peak, dtype=np.uint16)
            values[0, 0] = 0
            values[1, 1] = i  # three different images per class
            Image.fromarray(values).save(tmp_path / "d" / name / f"{i}.png")
    dataset = load_dataset(DataConfig(source=str(tmp_path / "d"), channels=1), (4, 4),
                           cache_dir=tmp_path / "cache")
    x, y = _all_x(dataset), np.concatenate([dataset.train.y, dataset.validation.y,
                                            dataset.test.y])
    classes = dataset.classes
    assert x[y == classes.index("bright")].max() == 255
    assert x[y == classes.index("dim")].max() == round(1000 / 4000 * 255)


def test_float_and_32_bit_tiffs_with_nan_and_negative_values(tmp_path):
    from PIL import Image

    values = np.linspace(-5.0, 3.0, 64, dtype=np.float32).reshape(8, 8)
    values[0, 2] = np.nan
    values[0, 1] = np.inf
    Image.fromarray(values).save(tmp_path / "f.tif")
    decoded = decode_image(tmp_path / "f.tif", (8, 8), 1)
    assert decoded.wide and decoded.mode == "F"
    assert (decoded.low, decoded.high) == (-5.0, 3.0)
    scaled = scale_to_uint8(decoded.pixels, decoded.low, decoded.high)
    assert scaled[0, 0, 0] == 0 and scaled[0, 2, 0] == 0  # the lowest, and NaN
    assert scaled[0, 1, 0] == 255 and scaled[7, 7, 0] == 255  # +inf, the highest
    assert scaled[1, 0, 0] == round((values[1, 0] + 5) / 8 * 255)
    ints = (np.arange(64, dtype=np.int32) * 1000 - 30000).reshape(8, 8)
    Image.fromarray(ints).save(tmp_path / "i.tif")
    wide = decode_image(tmp_path / "i.tif", (8, 8), 3)
    assert wide.mode == "I" and (wide.low, wide.high) == (-30000.0, 33000.0)
    assert wide.pixels.shape == (8, 8, 3)


def test_a_constant_wide_folder_is_zero_not_a_division_by_zero(tmp_path):
    assert scale_to_uint8(np.full((2, 2), 7.0), 7.0, 7.0).tolist() == [[0, 0], [0, 0]]
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((4, 4), 300, dtype=np.uint16)).save(
                tmp_path / "d" / name / f"{i}.png")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "divide by zero" RuntimeWarning either
        dataset = load_dataset(DataConfig(source=str(tmp_path / "d"), channels=1), (4, 4),
                               cache_dir=tmp_path / "cache")
    assert int(_all_x(dataset).max()) == 0


def test_eight_bit_images_decode_as_before(tmp_path):
    """JPEG, PNG (grey and colour) and palette images: Pillow's conversion and bilinear
    resize, byte for byte what version 1 of the cache stored."""
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    files = {"c.png": Image.fromarray(rgb), "c.jpg": Image.fromarray(rgb),
             "g.png": Image.fromarray(rgb[..., 0]),
             "p.png": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)}
    for name, image in files.items():
        image.save(tmp_path / name)
        for channels in (1, 3):
            with Image.open(tmp_path / name) as original:
                expected = np.asarray(original.convert("L" if channels == 1 else "RGB")
                                      .resize((6, 5), Image.Resampling.BILINEAR))
            decoded = decode_image(tmp_path / name, (5, 6), channels)
            assert not decoded.wide
            np.testing.assert_array_equal(decoded.pixels.reshape(expected.shape), expected)


def test_transparent_pixels_are_white_whatever_colour_they_hide(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:2, :, 3] = 255  # top half opaque green, bottom half transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    rgba[2:, :, :3] = (250, 0, 0)  # another colour under the transparent half: same look
    Image.fromarray(rgba).save(tmp_path / "b.png")
    a = decode_image(tmp_path / "a.png", (4, 4), 3)
    b = decode_image(tmp_path / "b.png", (4, 4), 3)
    assert a.pixels[0, 0].tolist() == [10, 200, 30]
    assert a.pixels[3, 0].tolist() == [255, 255, 255]
    assert a.digest == b.digest  # the same picture
    la = np.zeros((4, 4, 2), dtype=np.uint8)
    la[..., 1] = 0
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert decode_image(tmp_path / "la.png", (4, 4), 1).pixels.min() == 255


def test_a_16_bit_colour_png_keeps_its_high_byte(tmp_path):
    values = np.random.default_rng(0).integers(0, 65536, (6, 6, 3)).astype(np.uint16)
    _png16_rgb(tmp_path / "c.png", values)
    decoded = decode_image(tmp_path / "c.png", (6, 6), 3)
    np.testing.assert_array_equal(decoded.pixels, (values >> 8).astype(np.uint8))


def test_the_cache_key_changed_with_the_decoding():
    from hpo.data import CACHE_VERSION

    assert CACHE_VERSION >= 2  # version 1 clipped wide images and dropped transparency


# -- hidden files -----------------------------------------------------------------------------

def _hide_copies(root: Path) -> None:
    """What Jupyter, macOS and archives leave in a data folder."""
    for cls in ("cats", "dogs"):
        first = min((root / cls).iterdir())
        (root / cls / ".ipynb_checkpoints").mkdir()
        shutil.copy(first, root / cls / ".ipynb_checkpoints" / f"{first.stem}-checkpoint.png")
        shutil.copy(first, root / cls / f"._{first.name}")
    (root / ".ipynb_checkpoints" / "cats").mkdir(parents=True)
    shutil.copy(first, root / ".ipynb_checkpoints" / "cats" / "x.png")
    (root / "__MACOSX" / "cats").mkdir(parents=True)
    shutil.copy(first, root / "__MACOSX" / "cats" / "._x.png")
    (root / "dogs" / "Thumbs.db").write_bytes(b"not an image")


def test_hidden_files_and_folders_are_ignored_everywhere(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=8, size=8)
    _hide_copies(root)
    index = discover(root, fractions=FRACTIONS, seed=0)
    assert index.classes == ("cats", "dogs")
    paths = [p for files in index.files.values() for p, _ in files]
    assert len(paths) == 16
    assert not any(part.startswith(".") or part == "__MACOSX"
                   for p in paths for part in p.relative_to(root).parts)
    survey = survey_folder(root)
    assert sum(sum(c.values()) for c in survey.counts.values()) == 16
    assert not survey.duplicates["across_splits"] and not survey.duplicates["within"]
    # in a pre-split folder too, at any depth
    split = make_image_folder(tmp_path / "s", per_class=3, size=8, layout="pre-split")
    (split / "train" / ".ipynb_checkpoints").mkdir()
    shutil.copytree(split / "train" / "cats", split / "train" / ".ipynb_checkpoints" / "cats")
    shutil.copytree(split / "test" / "cats", split / "train" / "dogs" / ".hidden")
    index = discover(split, fractions=FRACTIONS, seed=0)
    assert {s: len(f) for s, f in index.files.items()} == {"train": 6, "validation": 6,
                                                           "test": 6}


# -- pre-split layouts ------------------------------------------------------------------------

def test_train_and_test_folders_are_splits_and_validation_is_carved_from_train(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=20, size=8, layout="pre-split")
    shutil.rmtree(root / "validation")
    (root / "train").rename(root / "Training")
    (root / "test").rename(root / "TEST")
    index = discover(root, fractions=FRACTIONS, seed=3)
    assert index.layout == "pre-split" and index.classes == ("cats", "dogs")
    assert index.carved == {"validation": round(0.15 / 0.85, 4)}
    counts = {s: np.bincount([label for _, label in f]).tolist()
              for s, f in index.files.items()}
    assert counts == {"train": [16, 16], "validation": [4, 4], "test": [20, 20]}
    assert all(p.parts[-3] == "Training" for p, _ in index.files["validation"])
    assert discover(root, fractions=FRACTIONS, seed=3).files == index.files
    assert discover(root, fractions=FRACTIONS, seed=4).files != index.files
    dataset = load_dataset(DataConfig(source=str(root)), (8, 8), seed=3,
                           cache_dir=tmp_path / "cache")
    assert dataset.facts["carved"] == index.carved


def test_thesis_layout_without_validation_carves_it(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("False", "True"), per_class=10, size=8,
                             layout="thesis")
    shutil.rmtree(root / "Validation")
    index = discover(root, fractions=FRACTIONS, seed=0)
    assert index.layout == "thesis" and "validation" in index.carved
    assert len(index.files["test"]) == 20 and len(index.files["validation"]) == 4


def test_train_and_validation_without_test_keep_every_training_image(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=5, size=8, layout="pre-split")
    shutil.rmtree(root / "test")
    index = discover(root, fractions=FRACTIONS, seed=0)
    assert index.carved == {}
    assert {s: len(f) for s, f in index.files.items()} == {"train": 10, "validation": 10,
                                                           "test": 0}


@pytest.mark.parametrize("arrange, fragment", [
    (lambda r: shutil.rmtree(r / "train"), "no train/"),
    (lambda r: (shutil.rmtree(r / "validation"), shutil.rmtree(r / "test")),
     r"train/ with class folders in it \(a train split\) next to nothing"),
    (lambda r: (shutil.rmtree(r / "validation"), shutil.rmtree(r / "test"),
                shutil.copytree(r / "train" / "cats", r / "birds")),
     r"next to birds/"),
    (lambda r: (shutil.rmtree(r / "validation"),
                [shutil.move(str(p), str(r / "test")) for p in (r / "test" / "cats").iterdir()],
                shutil.rmtree(r / "test" / "cats"), shutil.rmtree(r / "test" / "dogs")),
     r"test split\) holds 3 image\(s\) but no class folders"),
])
def test_split_folders_are_never_trained_as_classes(tmp_path, arrange, fragment):
    root = make_image_folder(tmp_path / "d", per_class=3, size=8, layout="pre-split")
    arrange(root)
    with pytest.raises(DataError, match=fragment) as info:
        discover(root, fractions=FRACTIONS, seed=0)
    assert "\n" not in str(info.value)


def test_a_class_named_train_among_classes_is_a_class(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=("bus", "train", "car"), per_class=4,
                             size=8)
    index = discover(root, fractions=FRACTIONS, seed=0)
    assert index.layout == "class-folders" and index.classes == ("bus", "car", "train")


# -- duplicates -------------------------------------------------------------------------------

def test_find_duplicates_counts_leaks_across_splits_and_classes():
    items = [("h1", "train", 0, "a"), ("h1", "test", 0, "b"),  # a leak across splits
             ("h2", "train", 0, "c"), ("h2", "train", 1, "d"),  # contradictory labels
             ("h3", "train", 1, "e"), ("h3", "train", 1, "f"),  # a harmless extra copy
             ("h4", "train", 0, "g")]
    found = find_duplicates(items)
    assert (found["across_splits"], found["across_classes"], found["within"]) == (2, 2, 1)
    assert found["examples"][:2] == [["a", "b"], ["c", "d"]]


def test_duplicates_are_warned_and_refused_under_strict(tmp_path, caplog):
    root = make_image_folder(tmp_path / "d", per_class=10, size=8)
    cats = sorted((root / "cats").iterdir())
    # the same picture under another class, re-encoded (other bytes, same pixels)
    from PIL import Image

    with Image.open(cats[0]) as image:
        image.save(root / "dogs" / "copy.bmp")
    data = DataConfig(source=str(root))
    with caplog.at_level("INFO", logger="hpo.data"):
        dataset = load_dataset(data, (8, 8), cache_dir=tmp_path / "cache")
    dup = dataset.facts["duplicates"]
    assert dup["across_classes"] == 2
    assert "under two classes (2 images)" in caplog.text and "copy.bmp" in caplog.text
    with pytest.raises(DataError, match=r"under two classes \(2 images\).*without strict"):
        load_dataset(data, (8, 8), cache_dir=tmp_path / "cache", strict=True)


def test_a_cache_with_skipped_images_is_refused_when_reused_under_strict(tmp_path):
    root = make_image_folder(tmp_path / "d", per_class=12, size=8, corrupt=1)
    data = DataConfig(source=str(root))
    load_dataset(data, (8, 8), cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="cannot read image .*broken_0.*without strict"):
        load_dataset(data, (8, 8), cache_dir=tmp_path / "cache", strict=True)


# -- what hpo init and hpo run say ------------------------------------------------------------

def test_hpo_init_reports_bit_depth_carving_and_duplicates(tmp_path):
    root = _wide_folder(tmp_path / "flat" / "train", per_class=5)
    test = _wide_folder(tmp_path / "flat" / "test", per_class=2, seed=1)
    shutil.copy(root / "cats" / "cats_0.png", test / "cats" / "leaked.png")
    result = run_here("init", "--data", str(tmp_path / "flat"), "--out",
                      str(tmp_path / "s.toml"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "classes (cats, dogs), layout pre-split" in out
    assert "a run carves 17.6% of train/ per class as validation" in out
    assert "15 image(s) of more than 8 bits (I;16 15)" in out
    assert "the same image in two splits (2 images)" in out
    assert "channels = 1" in (tmp_path / "s.toml").read_text()


def test_a_run_on_a_16_bit_split_folder_with_hidden_copies_and_a_leak(tmp_path):
    """``train/`` + ``test/`` of 16-bit PNGs with Jupyter's hidden copies and one image in
    both splits: two classes (not "train" and "test"), validation carved and said, cached
    images not constant, hidden copies not counted, the leak warned; refused under
    --strict with one line, exit 2, before any trial."""
    import optuna

    data = tmp_path / "data"
    _wide_folder(data / "train", per_class=12)
    _wide_folder(data / "test", per_class=3, seed=1)
    _hide_copies(data / "train")
    shutil.copy(data / "train" / "dogs" / "dogs_5.png", data / "test" / "dogs" / "leak.png")
    study = write_study(tmp_path / "s.toml", data=data, name="wide")
    text = study.read_text().replace("channels = 3", "channels = 1")
    study.write_text(text)
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cache = tmp_path / "cache"
    refused = run_here("run", "--study", str(study), "--storage", storage, "--n-trials", "1",
                       "--cache-dir", str(cache), "--strict", "--study-name", "strict",
                       cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert "same image in two splits (2 images)" in lines[-1]
    assert "Traceback" not in refused.stderr and "--strict" in lines[-1]
    # refused before the study is opened (the data is part of its identity): nothing stored
    assert not (tmp_path / "db.sqlite").exists() or "strict" not in \
        optuna.get_all_study_names(storage=storage)

    result = run_here("run", "--study", str(study), "--storage", storage, "--n-trials", "1",
                      "--cache-dir", str(cache), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "same image in two splits (2 images)" in result.stderr
    assert "validation carved from train/" in result.stderr
    stored = optuna.load_study(study_name="wide", storage=storage)
    facts = stored.user_attrs["hpo:data"]
    assert facts["classes"] == ["cats", "dogs"] and facts["layout"] == "pre-split"
    assert facts["carved"] == {"validation": round(0.15 / 0.85, 4)}
    assert facts["duplicates"]["across_splits"] == 2
    assert facts["wide_images"]["images"] == 12 * 2 + 3 * 2 + 1  # no hidden copy counted
    assert len(stored.trials) == 1
    (entry,) = [p for p in cache.iterdir() if (p / "meta.json").is_file()]
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["classes"] == ["cats", "dogs"]
    train = np.load(entry / "train_x.npy")
    assert len(train) + len(np.load(entry / "validation_x.npy")) == 24
    assert train.min() < 60 and train.max() > 240 and len(np.unique(train)) > 50
