"""Finding the ``benchmark_model`` binary to push: it is not on PyPI, so the user brings it.

Looked for, in order: ``--benchmark-binary PATH``, ``$EDGEPORT_BENCHMARK_MODEL``, then the cache
``~/.cache/edgeport/benchmark_model/<abi>/benchmark_model`` (``$XDG_CACHE_HOME`` respected). The ELF
header is checked against the device ABI so a host build is refused before it is pushed.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import UsageError

ENV_VAR = "EDGEPORT_BENCHMARK_MODEL"
NIGHTLY = "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
#: (nightly file name or None, bazel --config) per Android ABI.
_SOURCES = {
    "arm64-v8a": ("android_aarch64_benchmark_model", "android_arm64"),
    "x86_64": (None, "android_x86_64"),
}
# ELF e_machine values: what a binary was built for.
_ELF_MACHINES = {183: "arm64-v8a", 62: "x86_64", 40: "armeabi-v7a", 3: "x86"}


def cache_path(abi: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgeport" / "benchmark_model" / abi / "benchmark_model"


def where_to_get(abi: str) -> str:
    """One sentence: where the binary comes from and where edgeport looks for it."""
    nightly, config = _SOURCES.get(abi, (None, f"android_{abi}"))
    get = f"Download TensorFlow's nightly prebuilt {NIGHTLY}{nightly} (listed on the TFLite performance measurement page) or build it"
    if nightly is None:
        get = "Build it (TensorFlow publishes no nightly for this ABI)"
    return (
        f"{get} with 'bazel build -c opt --config={config} //tensorflow/lite/tools/benchmark:benchmark_model' "
        f"in a TensorFlow checkout, then save it as {cache_path(abi)}, set {ENV_VAR}=PATH, or pass --benchmark-binary PATH."
    )


def elf_abi(path: Path) -> str | None:
    """The ABI an ELF file was built for; None for a non-ELF file (a script) or an unknown machine."""
    try:
        with path.open("rb") as handle:
            head = handle.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return _ELF_MACHINES.get(int.from_bytes(head[18:20], order), f"e_machine {int.from_bytes(head[18:20], order)}")


def locate_benchmark_binary(abi: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """The ``benchmark_model`` to push to a device of ``abi``; a UsageError (exit 2) says how to get one."""
    if explicit is not None:
        path, origin = Path(explicit).expanduser(), "--benchmark-binary"
    elif os.environ.get(ENV_VAR):
        path, origin = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        path, origin = cache_path(abi), "the cache"
        if not path.is_file():
            raise UsageError(
                f"No benchmark_model binary for {abi} (looked at --benchmark-binary, ${ENV_VAR} and {path}).",
                hint=where_to_get(abi),
            )
    if not path.is_file():
        raise UsageError(f"benchmark_model from {origin} does not exist: {path}.", hint=where_to_get(abi))
    built_for = elf_abi(path)
    if built_for is not None and built_for != abi:
        raise UsageError(
            f"benchmark_model at {path} is built for {built_for}, but the device is {abi}.", hint=where_to_get(abi)
        )
    return path
