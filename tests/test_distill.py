"""Knowledge distillation on real MNIST: a quarter-size student learns more from the teacher than alone."""

from __future__ import annotations

import numpy as np
import pytest
from mnist_models import two_conv_cnn


@pytest.fixture(scope="module")
def teacher(mnist_splits):
    """A CNN trained on the first 4000 training images (its soft targets on the other 2000 are informative)."""
    from exporter.tfimport import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    keras.utils.set_random_seed(0)
    x, y = mnist_splits["train"]
    model = two_conv_cnn(32, 64, 64)
    model.fit(x[:4000], y[:4000], epochs=5, batch_size=64, verbose=0)
    return model


def test_width_multiplier_student_has_a_quarter_of_the_parameters(teacher):
    from exporter.compress.student import scale_width

    student = scale_width(teacher, 0.5)
    assert student.output_shape == teacher.output_shape
    assert student.get_layer("classifier").units == 10  # outputs keep their size
    assert student.get_layer("conv2").filters == 32 and student.get_layer("hidden").units == 32
    assert 0.24 < student.count_params() / teacher.count_params() < 0.26


def test_distilled_student_beats_the_same_student_trained_alone(teacher, mnist_splits):
    from exporter.compress.distill import DistillSpec, distill
    from exporter.compress.student import scale_width

    x, y = mnist_splits["train"]
    student = scale_width(teacher, 0.5, seed=0)
    before = [w.copy() for w in student.get_weights()]
    spec = DistillSpec(temperature=4.0, alpha=0.1, epochs=10, seed=0)
    distilled, report = distill(student, teacher, (x[4000:], y[4000:]), spec=spec, eval=mnist_splits["eval"])
    print("\n" + report.summary())
    assert report.student_params / report.teacher_params < 0.26
    # over the 3000-image eval split: teacher > distilled > alone, with a margin well above noise (~0.5 pp s.e.)
    assert report.teacher_accuracy > report.distilled_accuracy
    assert report.distilled_accuracy - report.student_alone_accuracy > 0.008, report.to_dict()
    assert all(np.array_equal(a, b) for a, b in zip(before, student.get_weights(), strict=True))  # input untouched
    from exporter.compress.finetune import accuracy

    assert accuracy(distilled, *mnist_splits["eval"]) == pytest.approx(report.distilled_accuracy)


def test_mismatched_outputs_are_refused(teacher):
    import keras

    from exporter.compress.distill import distill
    from exporter.errors import UsageError

    student = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    data = (np.zeros((8, 28, 28, 1), np.float32), np.zeros(8, np.int64))
    with pytest.raises(UsageError, match="same single output"):
        distill(student, teacher, data)


def test_bad_temperature_and_alpha_are_usage_errors():
    from exporter.compress.distill import DistillSpec
    from exporter.errors import UsageError

    with pytest.raises(UsageError, match="--temperature must be > 0"):
        DistillSpec(temperature=0)
    with pytest.raises(UsageError, match=r"--alpha .* must be in \[0, 1\]"):
        DistillSpec(alpha=1.5)


def test_compress_cli_distills_a_narrower_student_and_clusters_it(mnist_cnn_path, mnist_splits, tmp_path, capsys):
    import numpy as np
    from cli_helpers import run_cli

    from exporter.load import load_model

    x, y = mnist_splits["train"]
    np.savez(tmp_path / "train.npz", x=x[:1500], y=y[:1500])
    ex, ey = mnist_splits["eval"]
    np.savez(tmp_path / "eval.npz", x=ex[:500], y=ey[:500])
    out = tmp_path / "student.keras"
    run = run_cli(
        capsys, "compress", mnist_cnn_path, "--distill-from", mnist_cnn_path, "--student-width", "0.5",
        "--train", f"{tmp_path / 'train.npz'}:x,y", "--eval", f"{tmp_path / 'eval.npz'}:x,y",
        "--epochs", "1", "--cluster", "8", "-o", out, "--quiet",
    )  # fmt: skip
    assert run.code == 0, run.err
    text = run.out.lower()
    assert "teacher" in text and "alone" in text and "distilled" in text
    student = load_model(out).keras_model
    teacher = load_model(mnist_cnn_path).keras_model
    assert student.count_params() < 0.5 * teacher.count_params()
    conv = next(layer for layer in student.layers if layer.name.startswith("conv2"))
    assert len(np.unique(conv.get_weights()[0])) <= 8  # clustered to 8 shared values


def test_compress_cli_needs_a_technique(mnist_cnn_path, capsys):
    from cli_helpers import run_cli

    run = run_cli(capsys, "compress", mnist_cnn_path)
    assert run.code == 2 and "Nothing to do" in run.err
