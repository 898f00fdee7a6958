"""The report's charts as PNG ``data:`` URIs, so report.html opens anywhere with no network and no files.

matplotlib is imported only here, inside the functions, with the Agg backend: no display, no pyplot
global state (each chart is its own ``Figure``), and byte-identical PNGs for identical data (no
timestamp in the metadata), so regenerating an unchanged report leaves the file untouched.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

_PNG_METADATA = {"Software": None}  # no version or date in the file: same data, same bytes
_BLUE = "#3b6ea8"
_ORANGE = "#d9822b"
_GREY = "#888888"


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig


def _data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=_PNG_METADATA, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def latency_plot(series: Mapping[str, Sequence[float]]) -> str:
    """One histogram of per-run timings per benchmark, each on its own time axis (a phone run and a
    microcontroller run differ a hundredfold), with the median and p99 marked: tail latency is what a
    real-time loop misses its deadline on, and a mean hides it."""
    labels = list(series)
    fig = _figure(7.5, 0.6 + 1.9 * len(labels))
    axes = fig.subplots(len(labels), 1, squeeze=False)[:, 0]
    colors = [_BLUE, _ORANGE, "#5a9e5a", "#a85a9e", _GREY]
    for i, (ax, label) in enumerate(zip(axes, labels, strict=True)):
        values = sorted(float(v) for v in series[label])
        ax.hist(values, bins=min(40, max(5, len(values) // 3)), color=colors[i % len(colors)], alpha=0.85)
        median = values[len(values) // 2]
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        ax.axvline(median, color="black", linewidth=1, label=f"median {median:.4g} ms")
        ax.axvline(p99, color="black", linewidth=1, linestyle=":", label=f"p99 {p99:.4g} ms")
        ax.set_title(f"{_short(label, 60)}: {len(values)} runs", fontsize=9)
        ax.set_ylabel("runs", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("latency per inference (ms)")
    fig.suptitle("Latency distribution (every timed run)", fontsize=10)
    fig.tight_layout()
    return _data_uri(fig)


def size_plot(rows: Sequence[Mapping[str, Any]], top: int = 15) -> str:
    """Horizontal bars: constant bytes per Keras layer, largest on top.

    Targets that got the same model (cortex-m4, -m7, Ethos-U before Vela) have the same rows: the figure
    (about 0.2 s of matplotlib each) is drawn once per distinct table.
    """
    key = json.dumps([top, list(rows)], sort_keys=True, default=str)
    if key not in _SIZE_PLOTS:
        if len(_SIZE_PLOTS) > 16:
            _SIZE_PLOTS.clear()
        _SIZE_PLOTS[key] = _size_plot(rows, top)
    return _SIZE_PLOTS[key]


_SIZE_PLOTS: dict[str, str] = {}


def _size_plot(rows: Sequence[Mapping[str, Any]], top: int) -> str:
    shown = list(rows[:top])
    rest = rows[top:]
    labels = [_short(str(r.get("layer"))) for r in shown]
    values = [float(r.get("bytes") or 0) / 1024.0 for r in shown]
    if rest:
        labels.append(f"{len(rest)} more layers")
        values.append(sum(float(r.get("bytes") or 0) for r in rest) / 1024.0)
    fig = _figure(7.5, 0.9 + 0.32 * len(labels))
    ax = fig.subplots()
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=_BLUE)
    ax.set_yticks(y, labels, fontsize=8)
    for yi, v, r in zip(y, values, [*shown, None], strict=False):
        share = f" ({100 * r['share']:.1f}%)" if r is not None and r.get("share") is not None else ""
        ax.text(v, yi, f" {v:.1f} KiB{share}", va="center", fontsize=7)
    ax.set_xlabel("constant bytes (KiB): weights, biases, other constants")
    ax.margins(x=0.25)
    ax.set_title("Model size by Keras layer", fontsize=10)
    return _data_uri(fig)


def layer_error_plot(rows: Sequence[Mapping[str, Any]], top: int = 15) -> str:
    """Horizontal bars of the worst ops' SNR (lower is worse): the op alone, and end to end."""
    shown = list(rows[:top])
    labels = [_short(f"{row_label(r)} · {r.get('op')}", 44) for r in shown]
    cap = 80.0  # an op with no error at all (SNR infinite, null in JSON) is drawn at the cap, hatched
    local = [_snr(r.get("local_snr_db"), r.get("local") == "measured", cap) for r in shown]
    end = [_snr(r.get("snr_db"), True, cap) for r in shown]
    fig = _figure(7.5, 1.0 + 0.38 * len(labels))
    ax = fig.subplots()
    y = list(range(len(labels)))[::-1]
    height = 0.38
    ax.barh([v + height / 2 for v in y], [v or 0.0 for v in local], height, color=_ORANGE, label="this op alone")
    ax.barh([v - height / 2 for v in y], [v or 0.0 for v in end], height, color=_BLUE, label="end to end (accumulated)")
    for yi, lv, ev in zip(y, local, end, strict=True):
        ax.text(lv or 0.0, yi + height / 2, f" {_fmt(lv, cap)}", va="center", fontsize=7)
        ax.text(ev or 0.0, yi - height / 2, f" {_fmt(ev, cap)}", va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("SNR of the int8 activation vs float (dB; lower is worse)")
    ax.axvline(15, color=_GREY, linestyle="--", linewidth=0.8)
    ax.margins(x=0.15)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / len(labels)), ncol=2, frameon=False)
    ax.set_title(f"Per-layer quantization error, worst {len(shown)} first", fontsize=10)
    return _data_uri(fig)


def row_label(row: Mapping[str, Any]) -> str:
    """The layer a per-layer error row names; graph inputs and unattributed ops get a descriptive one."""
    if row.get("layer"):
        return str(row["layer"])
    return "(model input)" if row.get("op") == "INPUT" else "(no Keras layer)"


def _snr(value: Any, known: bool, cap: float) -> float | None:
    if value is None:
        return cap if known else None  # null with a measurement means no error at all
    return min(float(value), cap)


def _fmt(value: float | None, cap: float) -> str:
    if value is None:
        return "n/a"
    return "no error" if value >= cap else f"{value:.1f}"
