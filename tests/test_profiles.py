"""Target profiles: every shipped profile loads; user profiles are validated with errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import ProfileError
from exporter.profiles import available_targets, describe, load_profile, load_profiles

EXPECTED = {"android-arm64", "edgetpu", "cortex-m4", "cortex-m7", "cortex-m55-ethos-u55"}


def test_shipped_targets_are_the_five_device_classes_plus_generic_onnx():
    assert set(available_targets()) == EXPECTED | {"onnx"}
    assert load_profile("onnx").formats == ("onnx",)
    assert load_profile("android-arm64").formats == ("tflite", "onnx")
    assert load_profile("cortex-m4").formats == ("tflite",)


@pytest.mark.parametrize("name", sorted(EXPECTED | {"onnx"}))
def test_every_shipped_profile_loads_and_is_complete(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.batch == 1
    assert profile.quantization.scheme == "int8"
    assert set(profile.formats) <= {"tflite", "onnx"}
    assert profile.quantization.io_dtype in profile.quantization.io_dtypes_allowed
    assert profile.device.reference
    assert profile.benchmark.threads >= 1
    if profile.is_mcu:
        # an MCU profile names a board with its flash and RAM, and budgets that fit inside them
        assert profile.device.flash_bytes and profile.device.ram_bytes and profile.device.clock_mhz
        assert profile.memory.flash_budget_bytes <= profile.device.flash_bytes
        assert profile.memory.ram_budget_bytes <= profile.device.ram_bytes
        assert profile.requires_integer_only
        assert profile.ops.supports("CONV_2D") and not profile.ops.supports("GELU")
        assert profile.ops.limits["softmax_max_classes"] == 570


def test_op_lists_come_from_the_shipped_files():
    tflm = load_profile("cortex-m4").ops
    assert len(tflm.names) == 118  # every AddXxx() of MicroMutableOpResolver
    assert {"FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "UNIDIRECTIONAL_SEQUENCE_LSTM"} <= tflm.names
    edgetpu = load_profile("edgetpu").ops
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX", "MEAN", "TRANSPOSE_CONV"} <= edgetpu.names
    assert not edgetpu.supports("GELU") and not edgetpu.supports("HARD_SWISH")
    assert load_profile("edgetpu").memory.param_cache_bytes == 8 * 1024 * 1024
    android = load_profile("android-arm64").ops
    assert android.supports("GELU") and android.supports("FULLY_CONNECTED")
    assert not android.supports("FlexErf")  # Flex (SELECT_TF_OPS) needs a delegate LiteRT does not ship
    assert not android.supports("CUSTOM:edgetpu-custom-op")


def test_inheritance_records_where_each_value_came_from():
    profile = load_profile("cortex-m7")
    assert profile.sources["device.clock_mhz"] == "cortex-m7.toml"
    assert profile.sources["ops.list"] == "_cortex-m.toml"
    text = describe(profile)
    assert "clock_mhz = 480  # cortex-m7.toml" in text
    assert "list = 'tflm'  # _cortex-m.toml" in text


def test_ethos_u_profile_carries_vela_settings():
    profile = load_profile("cortex-m55-ethos-u55")
    assert profile.npu is not None and profile.npu.accelerator == "ethos-u55-128"
    assert profile.runtime.name == "tflite-micro+ethos-u"


def test_all_and_comma_lists():
    assert [p.name for p in load_profiles("all")] == sorted(EXPECTED)  # the generic onnx profile is asked for by name
    assert [p.name for p in load_profiles("edgetpu, cortex-m4,edgetpu")] == ["edgetpu", "cortex-m4"]


def test_unknown_target_lists_valid_ones():
    with pytest.raises(ProfileError, match=r"Unknown target 'cortex-m3'. Valid targets: android-arm64, cortex-m4"):
        load_profile("cortex-m3")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_user_profile_inheriting_a_shipped_one(tmp_path):
    path = _write(
        tmp_path,
        'inherit = "cortex-m4"\nname = "my-board"\ntitle = "My board"\ndescription = "M4 with less RAM"\n'
        "[memory]\nram_budget_bytes = 131072\n",
    )
    profile = load_profile(str(path))
    assert profile.name == "my-board"
    assert profile.memory.ram_budget_bytes == 131072
    assert profile.memory.flash_budget_bytes == load_profile("cortex-m4").memory.flash_budget_bytes
    assert profile.sources["memory.ram_budget_bytes"] == "mine.toml"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'inherit = "cortex-m4"\n[quantization]\nio_dtype = "int16"\n',
            r"key 'quantization.io_dtype' must be one of int8, uint8, float32; received 'int16'",
        ),
        (
            'inherit = "cortex-m4"\n[memory]\nram_budget_bytes = "lots"\n',
            r"key 'memory.ram_budget_bytes' must be an integer; received 'lots'",
        ),
        (
            'inherit = "cortex-m4"\n[memory]\nram_budget = 1\n',
            r"unknown key 'memory.ram_budget'. Valid keys in \[memory\]",
        ),
        ('inherit = "cortex-m4"\ncolour = "red"\n', r"unknown key 'colour'"),
        ('inherit = "cortex-m4"\n[ops]\nlist = "mystery"\n', r"key 'ops.list' names an unknown op list 'mystery'"),
        (
            'inherit = "cortex-m4"\n[ops.limits]\nsoftmax_max_classes = -3\n',
            r"key 'ops.limits.softmax_max_classes' must be a positive integer",
        ),
        ('inherit = "cortex-m4"\nbatch = 4\n', r"key 'batch' must be one of 1; received 4"),
        ('name = "x"\ntitle = "x"\ndescription = "x"\n', r"missing section \[device\]"),
        ('inherit = "cortex-m4"\n[device]\nkind = true\n', r"key 'device.kind' must be a string; received True"),
        ("this is [not toml", r"is not valid TOML"),
    ],
)
def test_malformed_user_profiles_name_the_key(tmp_path, body, message):
    path = _write(tmp_path, body)
    with pytest.raises(ProfileError, match=message) as info:
        load_profile(str(path))
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2


def test_missing_user_profile(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(str(tmp_path / "nope.toml"))
