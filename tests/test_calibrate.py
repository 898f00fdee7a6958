"""Calibrate stage: every spec form and every refusal, on the real MNIST test set, real photos and the
real anomaly-detection sample, plus small arrays written to tmp_path."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exporter.calibrate import (
    CalibrationSet,
    load_calibration,
    load_mnist_idx,
    select_indices,
    split_indices,
    synthetic_calibration,
)
from exporter.errors import CalibrationDataError
from exporter.load.model import TensorSpec

MNIST_IN = [TensorSpec("image", (1, 28, 28, 1))]
VWW_IN = [TensorSpec("input_1", (1, 96, 96, 3))]
AD_IN = [TensorSpec("input_1", (1, 640))]


@pytest.fixture(scope="module")
def mnist(request) -> tuple[np.ndarray, np.ndarray]:
    assets = request.getfixturevalue("assets")
    folder = assets / "datasets" / "mnist_test"
    return load_mnist_idx(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")


@pytest.fixture
def photos(assets: Path, tmp_path: Path) -> Path:
    """A folder holding only the two real photos (as in a user's calibration folder)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("cat.bmp", "grace_hopper.bmp"):
        (folder / name).write_bytes((assets / "images" / name).read_bytes())
    return folder


def _save(path: Path, array: np.ndarray) -> str:
    np.save(path, array)
    return str(path)


# ------------------------------------------------------------------------------------------ MNIST IDX


def test_mnist_idx_reader_reads_the_real_test_set(mnist):
    images, labels = mnist
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.uint8
    assert labels[0] == 7 and labels[1] == 2
    assert sorted(set(labels.tolist())) == list(range(10))
    assert images.max() == 255 and images.min() == 0


def test_mnist_idx_reader_refuses_a_file_that_is_not_idx(tmp_path):
    bad = tmp_path / "images.gz"
    bad.write_bytes(gzip.compress(b"hello, not an IDX file"))
    with pytest.raises(CalibrationDataError, match="is not an IDX file"):
        load_mnist_idx(bad, bad)


def test_mnist_idx_reader_refuses_truncated_data(tmp_path, assets):
    raw = gzip.decompress((assets / "datasets/mnist_test/t10k-labels-idx1-ubyte.gz").read_bytes())
    cut = tmp_path / "labels.gz"
    cut.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(CalibrationDataError, match=r"truncated or corrupt.*10000 bytes"):
        load_mnist_idx(cut, cut)


# ---------------------------------------------------------------------------------------------- .npy


def test_npy_of_real_mnist_is_subsampled_seeded_and_sorted(mnist, tmp_path):
    images, _ = mnist
    path = _save(tmp_path / "mnist.npy", images[..., None].astype(np.float32) / 255.0)
    calib = load_calibration(path, MNIST_IN, samples=200, seed=0)
    assert isinstance(calib, CalibrationSet)
    assert calib.kind == "npy" and calib.representative and calib.source == path
    assert calib.arrays[0].shape == (200, 28, 28, 1) and calib.arrays[0].dtype == np.float32
    assert calib.available == 10_000 and calib.count == 200 and calib.seed == 0
    assert calib.indices == sorted(calib.indices) and len(set(calib.indices)) == 200
    np.testing.assert_array_equal(calib.arrays[0][:, :, :, 0] * 255.0, images[calib.indices].astype(np.float32))
    assert calib.value_ranges == [(0.0, 1.0)]
    assert calib.warnings == []
    batches = list(calib.batches())
    assert len(batches) == 200 and batches[0][0].shape == (1, 28, 28, 1)


def test_npy_uint8_without_channel_axis_is_reshaped_and_warned(mnist, tmp_path):
    images, _ = mnist
    calib = load_calibration(_save(tmp_path / "raw.npy", images[:300]), MNIST_IN, samples=100)
    assert calib.arrays[0].shape == (100, 28, 28, 1) and calib.arrays[0].dtype == np.float32
    assert calib.value_ranges[0] == (0.0, 255.0)
    assert any("added a channel axis of size 1" in w for w in calib.warnings)
    assert any("integer samples (uint8, values 0..255)" in w and "converted to float32" in w for w in calib.warnings)


@pytest.mark.parametrize(
    ("shape", "count"),
    [((28, 28, 1), 1), ((3, 28, 28, 1), 3), ((3, 1, 28, 28, 1), 3)],
    ids=["one-sample", "N-samples", "stacked-batch-1"],
)
def test_npy_accepted_shapes(tmp_path, shape, count):
    calib = load_calibration(_save(tmp_path / "x.npy", np.full(shape, 0.5, np.float32)), MNIST_IN)
    assert calib.arrays[0].shape == (count, 28, 28, 1)
    assert f"quantization ranges from {count} samples may be unrepresentative; 100-500 is typical" in calib.warnings


def test_npy_of_the_real_anomaly_detection_windows(assets, tmp_path):
    """The AD sample: 200 frames x 128 mel bins -> the 196 sliding 5-frame windows the model scores."""
    frames = np.fromfile(
        assets / "models/mlperf_tiny/anomaly_detection/normal_id_01_00000000_hist_librosa.bin", dtype=np.float32
    ).reshape(200, 128)
    windows = np.stack([frames[i : i + 5].reshape(640) for i in range(196)])
    calib = load_calibration(_save(tmp_path / "ad.npy", windows), AD_IN, samples=500)
    assert calib.count == calib.available == 196 and calib.indices == list(range(196))
    assert calib.value_ranges[0] == (float(windows.min()), float(windows.max()))
    assert calib.value_ranges[0][0] == pytest.approx(-66.89894, abs=1e-4)
    assert calib.warnings == []


def test_npy_wrong_shape_names_input_expected_and_received(tmp_path):
    path = _save(tmp_path / "x.npy", np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(
        CalibrationDataError,
        match=r"Input 'image' expects samples of shape \(28, 28, 1\).*received shape \(4, 32, 32, 3\)",
    ):
        load_calibration(path, MNIST_IN)


def test_text_file_named_npy_is_refused(tmp_path):
    path = tmp_path / "calib.npy"
    path.write_text("0.1, 0.2, 0.3\n")
    with pytest.raises(CalibrationDataError, match=r"Cannot read .*calib.npy' as a NumPy .npy file: it does not start"):
        load_calibration(str(path), MNIST_IN)


def test_truncated_npy_is_refused(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, np.zeros((10, 28, 28, 1), np.float32))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CalibrationDataError, match=r"Cannot read .*cut.npy' as a NumPy .npy file \("):
        load_calibration(str(path), MNIST_IN)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CalibrationDataError, match=r"'.*nope.npy' was not found"):
        load_calibration(str(tmp_path / "nope.npy"), MNIST_IN)
    with pytest.raises(CalibrationDataError, match=r"file '.*nope.npz' was not found"):
        load_calibration(f"{tmp_path / 'nope.npz'}:x", MNIST_IN)


def test_non_numeric_dtype_is_refused(tmp_path):
    path = _save(tmp_path / "s.npy", np.array([["a"] * 640] * 2))
    with pytest.raises(CalibrationDataError, match=r"Input 'input_1' needs numeric samples; received dtype <U1"):
        load_calibration(path, AD_IN)


def test_nan_and_inf_are_refused_with_count_and_first_index(tmp_path):
    data = np.random.default_rng(1).random((20, 640), dtype=np.float32)
    data[7, 3] = np.nan
    data[12, :] = np.nan
    with pytest.raises(
        CalibrationDataError, match=r"holds NaN in 2 of 20 selected samples \(first at source index 7\)"
    ):
        load_calibration(_save(tmp_path / "nan.npy", data), AD_IN)
    data = np.ones((5, 640), np.float32)
    data[4, 0] = np.inf
    with pytest.raises(CalibrationDataError, match=r"holds Inf in 1 of 5 selected samples \(first at source index 4\)"):
        load_calibration(_save(tmp_path / "inf.npy", data), AD_IN)


def test_zero_samples_are_refused(tmp_path):
    with pytest.raises(CalibrationDataError, match=r"needs at least 1 sample; '.*empty.npy' holds 0"):
        load_calibration(_save(tmp_path / "empty.npy", np.zeros((0, 640), np.float32)), AD_IN)


def test_few_samples_warn(tmp_path):
    calib = load_calibration(_save(tmp_path / "x.npy", np.ones((10, 640), np.float32)), AD_IN)
    assert "quantization ranges from 10 samples may be unrepresentative; 100-500 is typical" in calib.warnings


def test_npy_for_a_multi_input_model_is_refused(tmp_path):
    two = [TensorSpec("a", (1, 4)), TensorSpec("b", (1, 2))]
    with pytest.raises(CalibrationDataError, match=r"holds one array but the model has 2 inputs \(a, b\)"):
        load_calibration(_save(tmp_path / "x.npy", np.ones((3, 4), np.float32)), two)


# ---------------------------------------------------------------------------------------------- .npz


def test_npz_with_samples_and_labels_keeps_labels_of_the_selected_samples(mnist, tmp_path):
    images, labels = mnist
    path = tmp_path / "mnist.npz"
    np.savez(path, x=images[..., None], y=labels)
    calib = load_calibration(f"{path}:x,y", MNIST_IN, samples=150, seed=3, with_labels=True)
    assert calib.kind == "npz" and calib.count == 150
    np.testing.assert_array_equal(calib.labels, labels[calib.indices])
    # No key: 'x' and 'y' are recognised by name, labels kept.
    auto = load_calibration(str(path), MNIST_IN, samples=150, seed=3)
    assert auto.indices == calib.indices
    np.testing.assert_array_equal(auto.labels, calib.labels)
    # Explicit single key: that array, no labels.
    only_x = load_calibration(f"{path}:x", MNIST_IN, samples=150, seed=3)
    assert only_x.labels is None
    np.testing.assert_array_equal(only_x.arrays[0], calib.arrays[0])


def test_npz_with_one_array_uses_it(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, whatever=np.ones((60, 640), np.float32))
    calib = load_calibration(str(path), AD_IN)
    assert calib.count == 60 and calib.labels is None and calib.warnings == []


def test_npz_missing_key_lists_the_keys_in_the_file(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.ones((3, 640), np.float32), targets=np.arange(3))
    with pytest.raises(CalibrationDataError, match=r"Array 'x' is not in '.*d.npz'; the file holds: images, targets\."):
        load_calibration(f"{path}:x", AD_IN)
    with pytest.raises(CalibrationDataError, match=r"holds several arrays \(images, targets\).*name the one"):
        load_calibration(str(path), AD_IN)


def test_npz_for_multi_input_models(tmp_path):
    two = [TensorSpec("audio", (1, 640)), TensorSpec("meta", (1, 3))]
    rng = np.random.default_rng(0)
    a, b, y = rng.random((70, 640)), rng.random((70, 3)), rng.integers(0, 2, 70)
    path = tmp_path / "multi.npz"
    np.savez(path, first=a, second=b, y=y)
    calib = load_calibration(f"{path}:first;second,y", two, samples=50)
    assert [x.shape for x in calib.arrays] == [(50, 640), (50, 3)]
    np.testing.assert_allclose(calib.arrays[1], b[calib.indices].astype(np.float32))
    np.testing.assert_array_equal(calib.labels, y[calib.indices])
    assert len(calib.value_ranges) == 2
    named = tmp_path / "named.npz"
    np.savez(named, meta=b, audio=a)  # keys named after the inputs, in any order
    by_name = load_calibration(str(named), two, samples=50)
    np.testing.assert_array_equal(by_name.arrays[0], calib.arrays[0])
    with pytest.raises(CalibrationDataError, match=r"has 2 input\(s\) \(audio, meta\) but .* names 1 array"):
        load_calibration(f"{path}:first", two)
    np.savez(tmp_path / "uneven.npz", a=a, b=b[:60])
    with pytest.raises(CalibrationDataError, match=r"same number of samples; received audio: 70, meta: 60"):
        load_calibration(f"{tmp_path / 'uneven.npz'}:a;b", two)


def test_npz_labels_of_the_wrong_length_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((10, 640)), y=np.arange(9))
    with pytest.raises(CalibrationDataError, match=r"one entry per sample; received labels of shape \(9,\) for 10"):
        load_calibration(f"{path}:x,y", AD_IN)


def test_corrupt_npz_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(CalibrationDataError, match=r"as a NumPy .npz file"):
        load_calibration(str(path), AD_IN)


def test_labels_required_for_evaluation(tmp_path):
    path = _save(tmp_path / "x.npy", np.ones((5, 640), np.float32))
    with pytest.raises(CalibrationDataError, match=r"Evaluation data needs labels; '.*x.npy' carries none"):
        load_calibration(path, AD_IN, with_labels=True)


def test_scaling_options_are_ignored_for_arrays_with_a_warning(tmp_path):
    calib = load_calibration(_save(tmp_path / "x.npy", np.ones((60, 640), np.float32)), AD_IN, input_range="-1,1")
    assert any("apply to image folders only" in w for w in calib.warnings)
    assert calib.value_ranges == [(1.0, 1.0)]


# ------------------------------------------------------------------------------------------- images


def test_real_photos_resized_to_96x96_rgb_in_0_1(photos):
    calib = load_calibration(str(photos), VWW_IN)
    assert calib.kind == "images" and calib.count == 2 and calib.available == 2
    assert calib.arrays[0].shape == (2, 96, 96, 3) and calib.arrays[0].dtype == np.float32
    low, high = calib.value_ranges[0]
    assert 0.0 <= low < 0.2 and 0.9 < high <= 1.0
    assert calib.preprocessing == "2 images resized to 96x96 RGB, scaled to 0..1"
    assert calib.source == f"{photos}/ (2 images)"
    assert any("scaled to 0..1 because no input range was given" in w and "--input-range" in w for w in calib.warnings)
    assert "quantization ranges from 2 samples may be unrepresentative; 100-500 is typical" in calib.warnings
    assert calib.labels is None
    # Bilinear resize of the real photo, channel for channel.
    with Image.open(photos / "cat.bmp") as im:
        expected = np.asarray(im.convert("RGB").resize((96, 96), Image.Resampling.BILINEAR), np.float32) / 255.0
    np.testing.assert_allclose(calib.arrays[0][0], expected, atol=1e-6)


def test_real_photos_as_grayscale_28x28(photos):
    calib = load_calibration(str(photos), MNIST_IN, input_range="0,255")
    assert calib.arrays[0].shape == (2, 28, 28, 1)
    assert calib.preprocessing == "2 images resized to 28x28 grayscale, scaled to 0..255"
    assert 200 < calib.value_ranges[0][1] <= 255.0
    assert not any("no input range was given" in w for w in calib.warnings)


def test_input_range_and_mean_std_scale_the_same_pixels(photos):
    unit = load_calibration(str(photos), VWW_IN).arrays[0]
    signed = load_calibration(str(photos), VWW_IN, input_range="-1,1")
    np.testing.assert_allclose(signed.arrays[0], unit * 2.0 - 1.0, atol=1e-5)
    assert signed.preprocessing.endswith("scaled to -1..1")
    normed = load_calibration(str(photos), VWW_IN, mean=[127.5, 127.5, 127.5], std=[127.5])
    np.testing.assert_allclose(normed.arrays[0], signed.arrays[0], atol=1e-5)
    assert "mean [127.5, 127.5, 127.5], std [127.5, 127.5, 127.5]" in normed.preprocessing
    with pytest.raises(CalibrationDataError, match=r"either input_range or mean/std, not both"):
        load_calibration(str(photos), VWW_IN, input_range="0,1", mean=[0.5])
    with pytest.raises(CalibrationDataError, match=r"mean needs 1 or 3 values \(one per channel\); received 2"):
        load_calibration(str(photos), VWW_IN, mean=[1, 2], std=[1])
    with pytest.raises(CalibrationDataError, match=r"input_range must be 'low,high'; received 'zero-one'"):
        load_calibration(str(photos), VWW_IN, input_range="zero-one")


def test_real_folder_skips_non_image_files_with_a_count(assets):
    calib = load_calibration(str(assets / "images"), VWW_IN)
    assert calib.count == 2
    assert any(w.startswith("skipped 1 non-image file(s)") and "imagenet_labels.txt" in w for w in calib.warnings)


def test_channels_first_input(photos):
    calib = load_calibration(str(photos), [TensorSpec("x", (1, 3, 32, 48))])
    assert calib.arrays[0].shape == (2, 3, 32, 48)
    assert calib.preprocessing.startswith("2 images resized to 32x48 RGB (NCHW)")


def _make_images(folder: Path, names: list[str], size=(40, 30)) -> None:
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (i * 40 % 256, 100, 200)).save(path)


def test_class_sub_folders_give_sorted_class_labels(tmp_path):
    root = tmp_path / "data"
    _make_images(root, ["dog/1.png", "dog/2.JPG", "cat/a.jpeg", "cat/b.webp", "cat/c.GIF", "bird/z.bmp"])
    calib = load_calibration(str(root), MNIST_IN, with_labels=True)
    assert calib.count == 6 and calib.classes == ["bird", "cat", "dog"]
    # files sorted by path: bird/z, cat/a, cat/b, cat/c, dog/1, dog/2
    assert calib.labels.tolist() == [0, 1, 1, 1, 2, 2]
    assert calib.preprocessing.endswith("labels from class sub-folders")
    assert calib.to_dict()["classes"] == ["bird", "cat", "dog"]


def test_labels_txt_gives_labels(tmp_path):
    root = tmp_path / "data"
    _make_images(root, ["a.png", "b.png", "c.png"])
    (root / "labels.txt").write_text("# file label\na.png 3\nb.png 0\n\nc.png 9\n")
    calib = load_calibration(str(root), MNIST_IN)
    assert calib.labels.tolist() == [3, 0, 9]
    assert not any("non-image" in w for w in calib.warnings)
    (root / "labels.txt").write_text("a.png 3\nb.png 0\n")
    with pytest.raises(CalibrationDataError, match=r"gives no label for 1 of 3 images \(first: c.png\)"):
        load_calibration(str(root), MNIST_IN)


def test_image_that_fails_to_decode_is_named(tmp_path):
    root = tmp_path / "data"
    _make_images(root, ["good.png"])
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(CalibrationDataError, match=r"Cannot decode image '.*broken.jpg'"):
        load_calibration(str(root), MNIST_IN)


def test_empty_folder_is_refused(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "notes.txt").write_text("no pictures here")
    with pytest.raises(CalibrationDataError, match=r"Image folder '.*empty' holds no images \(1 other file\(s\)\)"):
        load_calibration(str(root), MNIST_IN)


def test_image_folder_needs_an_image_input(photos):
    with pytest.raises(CalibrationDataError, match=r"needs a model input of static shape \(1, H, W, C\).*\(1, 640\)"):
        load_calibration(str(photos), AD_IN)
    with pytest.raises(CalibrationDataError, match=r"static shape.*\(1, None, None, 3\)"):
        load_calibration(str(photos), [TensorSpec("x", (1, -1, -1, 3))])


def test_image_folder_subset_and_exclude_pick_files_before_decoding(tmp_path):
    root = tmp_path / "many"
    _make_images(root, [f"{i:03d}.png" for i in range(30)], size=(8, 8))
    (root / "007.png").write_bytes(b"corrupt")  # never decoded unless selected
    calib = load_calibration(str(root), MNIST_IN, samples=10, seed=5, exclude=[7])
    assert calib.available == 30 and calib.count == 10 and 7 not in calib.indices
    with pytest.raises(CalibrationDataError, match=r"007.png"):
        load_calibration(str(root), MNIST_IN, samples=30)


# ---------------------------------------------------------------------------------- module:function


def _write_module(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_function_in_a_py_file_yields_samples(tmp_path):
    path = _write_module(
        tmp_path,
        "rep",
        """
        import numpy as np

        def representative():
            rng = np.random.default_rng(0)
            for _ in range(80):
                yield [rng.random((1, 640), dtype=np.float32)]   # the TF representative_dataset form

        def labelled():
            for i in range(60):
                yield np.full((640,), i, np.float32), i % 2
        """,
    )
    calib = load_calibration(f"{path}:representative", AD_IN, samples=50)
    assert calib.kind == "module" and calib.count == 50 and calib.available == 80
    assert calib.source == f"{path}:representative" and calib.labels is None
    assert "read 80 samples" in calib.preprocessing and "250 = 5 x samples" in calib.preprocessing
    pairs = load_calibration(f"{path}:labelled", AD_IN, samples=100)
    assert pairs.count == 60
    np.testing.assert_array_equal(pairs.labels, np.arange(60) % 2)
    np.testing.assert_array_equal(pairs.arrays[0][:, 0], np.arange(60, dtype=np.float32))


def test_dotted_module_function_multi_input_dicts_and_bound(tmp_path, monkeypatch):
    _write_module(
        tmp_path,
        "edgeport_testdata_mod",
        """
        import itertools
        import numpy as np

        def dicts():
            for i in range(55):
                yield {"meta": np.full((1, 3), i), "audio": np.zeros((1, 640))}

        def endless():
            for i in itertools.count():
                yield np.full((2, 640), i, np.float32)   # batches of 2

        def broken():
            yield np.zeros(640)
            raise RuntimeError("disk full")

        def wrong_shape():
            yield np.zeros((1, 641))

        NOT_A_FUNCTION = 3
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    two = [TensorSpec("audio", (1, 640)), TensorSpec("meta", (1, 3))]
    calib = load_calibration("edgeport_testdata_mod:dicts", two, samples=100)
    assert [a.shape for a in calib.arrays] == [(55, 640), (55, 3)]
    assert calib.value_ranges[1] == (0.0, 54.0)
    assert any("integer samples" in w for w in calib.warnings)

    bounded = load_calibration("edgeport_testdata_mod:endless", AD_IN, samples=10)
    assert bounded.available == 50 and bounded.count == 10  # 5 x samples read, then subsampled
    assert any("stopped reading 'edgeport_testdata_mod:endless' after 50 samples" in w for w in bounded.warnings)

    with pytest.raises(
        CalibrationDataError, match=r"function 'edgeport_testdata_mod:broken' raised RuntimeError: disk full"
    ):
        load_calibration("edgeport_testdata_mod:broken", AD_IN)
    with pytest.raises(
        CalibrationDataError, match=r"expects samples of shape \(640,\).*received shape \(1, 641\) from item 0"
    ):
        load_calibration("edgeport_testdata_mod:wrong_shape", AD_IN)
    with pytest.raises(CalibrationDataError, match=r"has no function 'nope'.*its functions: broken, dicts, endless"):
        load_calibration("edgeport_testdata_mod:nope", AD_IN)
    with pytest.raises(CalibrationDataError, match=r"must name a function; received a int"):
        load_calibration("edgeport_testdata_mod:NOT_A_FUNCTION", AD_IN)
    with pytest.raises(CalibrationDataError, match=r"Item 0 of .*endless' is a single ndarray; the model has 2 inputs"):
        load_calibration("edgeport_testdata_mod:endless", two)


def test_module_import_failures_and_empty_generators(tmp_path):
    bad = _write_module(tmp_path, "bad", "import numpy as np\nraise ImportError('no such thing')\n")
    with pytest.raises(CalibrationDataError, match=r"Cannot import '.*bad.py'.*ImportError: no such thing"):
        load_calibration(f"{bad}:f", AD_IN)
    empty = _write_module(tmp_path, "empty", "def none():\n    return iter([])\n\ndef boom():\n    1 / 0\n")
    with pytest.raises(CalibrationDataError, match=r"needs at least 1 sample; '.*empty.py:none' yielded none"):
        load_calibration(f"{empty}:none", AD_IN)
    with pytest.raises(
        CalibrationDataError, match=r"function '.*empty.py:boom' raised ZeroDivisionError: division by zero"
    ):
        load_calibration(f"{empty}:boom", AD_IN)
    with pytest.raises(CalibrationDataError, match=r"Cannot import 'edgeport_no_such_module_xyz'.*ModuleNotFoundError"):
        load_calibration("edgeport_no_such_module_xyz:data", AD_IN)
    with pytest.raises(CalibrationDataError, match=r"needs the function to call"):
        load_calibration(str(empty), AD_IN)


# ---------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_uniform_seeded_and_flagged_not_representative():
    two = [TensorSpec("audio", (1, 640)), TensorSpec("image", (1, 8, 8, 3))]
    calib = synthetic_calibration(two, samples=64, seed=1, value_range=(-1.0, 1.0))
    assert not calib.representative and calib.kind == "synthetic" and calib.source == "synthetic"
    assert [a.shape for a in calib.arrays] == [(64, 640), (64, 8, 8, 3)]
    assert all(-1.0 <= lo < -0.9 and 0.9 < hi <= 1.0 for lo, hi in calib.value_ranges)
    assert any("not representative" in w for w in calib.warnings)
    again = synthetic_calibration(two, samples=64, seed=1, value_range=(-1.0, 1.0))
    np.testing.assert_array_equal(calib.arrays[1], again.arrays[1])
    via_spec = load_calibration("synthetic", two[:1], samples=64)
    assert not via_spec.representative and via_spec.value_ranges[0][0] >= 0.0
    with pytest.raises(CalibrationDataError, match=r"Evaluation data needs labels; 'synthetic' carries none"):
        load_calibration("synthetic", two[:1], with_labels=True)


# ----------------------------------------------------------------------------------------- selection


def test_seeded_subset_is_deterministic_and_seed_dependent(mnist, tmp_path):
    images, _ = mnist
    path = _save(tmp_path / "m.npy", images[:2000, :, :, None])
    a = load_calibration(path, MNIST_IN, samples=100, seed=7)
    b = load_calibration(path, MNIST_IN, samples=100, seed=7)
    c = load_calibration(path, MNIST_IN, samples=100, seed=8)
    assert a.indices == b.indices and a.indices != c.indices
    np.testing.assert_array_equal(a.arrays[0], b.arrays[0])
    assert select_indices(10, 100, seed=0) == list(range(10))


def test_exclude_keeps_calibration_and_evaluation_disjoint(mnist, tmp_path):
    images, labels = mnist
    path = tmp_path / "m.npz"
    np.savez(path, x=images[:1000, :, :, None], y=labels[:1000])
    calib = load_calibration(f"{path}:x,y", MNIST_IN, samples=200, seed=0)
    evaluation = load_calibration(f"{path}:x,y", MNIST_IN, samples=300, seed=0, exclude=calib.indices, with_labels=True)
    assert not set(calib.indices) & set(evaluation.indices)
    assert evaluation.count == 300 and evaluation.available == 1000
    np.testing.assert_array_equal(evaluation.labels, labels[evaluation.indices])
    with pytest.raises(CalibrationDataError, match=r"all 1000 samples of .* are excluded"):
        load_calibration(f"{path}:x", MNIST_IN, exclude=list(range(1000)))
    with pytest.raises(CalibrationDataError, match=r"exclude holds negative index -1"):
        load_calibration(f"{path}:x", MNIST_IN, exclude=[-1])


def test_split_indices_are_disjoint_seeded_and_complete():
    splits = split_indices(10_000, {"train": 0.8, "calib": 0.1, "eval": 0.1}, seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 8000, "calib": 1000, "eval": 1000}
    everything = [i for v in splits.values() for i in v]
    assert sorted(everything) == list(range(10_000))
    assert all(v == sorted(v) for v in splits.values())
    assert split_indices(10_000, {"train": 0.8, "calib": 0.1, "eval": 0.1}, seed=0) == splits
    assert split_indices(10_000, {"train": 0.8, "calib": 0.1, "eval": 0.1}, seed=1)["calib"] != splits["calib"]
    odd = split_indices(7, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, seed=0)
    assert sum(len(v) for v in odd.values()) == 7
    partial = split_indices(10, {"calib": 0.25, "eval": 0.25}, seed=0)
    assert [len(v) for v in partial.values()] == [2, 2]
    with pytest.raises(CalibrationDataError, match=r"sum to at most 1; received 1.2"):
        split_indices(10, {"a": 0.6, "b": 0.6}, seed=0)


# ---------------------------------------------------------------------------------------- lightness


def test_calibration_never_imports_tensorflow(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from exporter.calibrate import load_calibration\n"
        "from exporter.load.model import TensorSpec\n"
        f"np.save({str(tmp_path / 'x.npy')!r}, np.ones((3, 4), np.float32))\n"
        f"load_calibration({str(tmp_path / 'x.npy')!r}, [TensorSpec('x', (1, 4))])\n"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
