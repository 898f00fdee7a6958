"""report.html and ``edgeport report DIR``: a self-contained page built from a real export's report.json.

The report is real end to end: an export of the tiny CNN, its per-layer error against a real float
conversion, its size by layer, and a real host benchmark. Only the finding with a ``<script>`` in it is
added, to prove that report strings are escaped.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from cli_helpers import run_cli

from exporter.report.html import NOT_BENCHMARKED, render_html, write_html_report
from exporter.report.report import dumps

HOSTILE = '<script>alert("x")</script> & <img src=//evil.example/a.png>'
PNG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def export_dir(tiny_keras_path, tiny_calib_path, tmp_path_factory):
    """A real single-target export plus real per-layer error, size by layer and benchmark data."""
    from exporter.analyze.layer_error import layer_errors
    from exporter.analyze.size_breakdown import size_by_layer
    from exporter.benchmark.api import benchmark
    from exporter.convert.tflite import prepare_saved_model, run_converter
    from exporter.load import load_model
    from exporter.pipeline import export
    from exporter.verify.graph import TFLiteGraph

    out = tmp_path_factory.mktemp("export") / "cortex-m4"
    export(tiny_keras_path, target="cortex-m4", calib=str(tiny_calib_path), output_dir=out, min_agreement=0.0)
    model = (out / "model_int8.tflite").read_bytes()
    source = load_model(tiny_keras_path)
    work = tmp_path_factory.mktemp("work")
    saved, mode = prepare_saved_model(source, work)
    float_model = run_converter(source, saved, mode, work, config=None, calib_path=None, tag="float")
    samples = np.load(tiny_calib_path)

    data = json.loads((out / "report.json").read_text())
    data["layer_errors"] = layer_errors(float_model, model, [samples], source.layers).to_dict()
    data["size_by_layer"] = size_by_layer(TFLiteGraph.from_bytes(model), source.layers)
    data["benchmark"] = benchmark(out / "model_int8.tflite", "cortex-m4", runs=30, warmup=1).to_dict()
    data["verification"]["findings"].append({"severity": "warning", "code": "test-escaping", "message": HOSTILE})
    (out / "report.json").write_text(dumps(data))
    return out


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in PNG.findall(page)]


def _assert_offline(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert 'src="//' not in page and "url(" not in page
    assert "<script" not in page.lower()


def test_page_is_self_contained_with_every_section(export_dir):
    data = json.loads((export_dir / "report.json").read_text())
    page = render_html(data)
    _assert_offline(page)
    images = _images(page)
    assert len(images) == 3  # latency, size by layer, per-layer error
    for png in images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        import matplotlib.image

        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300
        assert pixels[..., :3].std() > 0.05  # a chart, not a blank canvas
    assert "Verdict: ok" in page
    for fit in data["fit"]:
        assert f"<td>{fit['resource']}</td>" in page and fit["method"] in page
    for op in data["verification"]["ops"]:
        assert f"<td>{op}</td>" in page
    assert data["fidelity"]["outputs"][0]["name"] in page
    assert "Accuracy guard" in page and "plain int8" in page  # the guard's attempts table
    worst = data["layer_errors"]["rows"][0]
    assert f"<td>{worst['layer']}</td>" in page
    assert "Size by layer" in page and "<td>classifier</td>" in page
    assert NOT_BENCHMARKED not in page and "measured (host, TFLite Micro" in page


def test_report_strings_are_escaped(export_dir):
    page = render_html(json.loads((export_dir / "report.json").read_text()))
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img src=//evil.example/a.png&gt;" in page
    assert "<script>" not in page and "<img src=//" not in page


def test_without_benchmark_says_how_to_get_one(export_dir):
    data = json.loads((export_dir / "report.json").read_text())
    del data["benchmark"]
    page = render_html(data)
    assert NOT_BENCHMARKED in page
    assert len(_images(page)) == 2


def test_a_list_of_benchmarks_is_one_plot_and_one_row_each(export_dir):
    data = json.loads((export_dir / "report.json").read_text())
    second = dict(data["benchmark"], target="android-arm64", interpreter="litert")
    data["benchmark"] = [data["benchmark"], second]
    page = render_html(data)
    assert len(_images(page)) == 3
    assert "<td>cortex-m4 tflite-micro 1 thr</td>" in page and "<td>android-arm64 litert 1 thr</td>" in page


def test_cli_regenerates_html_and_markdown(export_dir, tmp_path, capsys):
    folder = tmp_path / "one"
    shutil.copytree(export_dir, folder)
    (folder / "report.html").unlink(missing_ok=True)
    run = run_cli(capsys, "report", folder)
    assert run.code == 0, run.err
    page = (folder / "report.html").read_text()
    assert page == render_html(json.loads((folder / "report.json").read_text()))
    markdown = (folder / "report.md").read_text()
    assert markdown.startswith("# edgeport report: tiny -> cortex-m4") and "Accuracy guard" in markdown
    before = (folder / "report.html").stat().st_mtime_ns
    assert run_cli(capsys, "report", folder).code == 0
    assert (folder / "report.html").stat().st_mtime_ns == before  # identical page: file left alone


def test_markdown_from_json_matches_the_export(tiny_keras_path, tiny_calib_path, tmp_path):
    """report.md rebuilt from report.json is byte-identical to the one the export wrote."""
    from exporter.pipeline import export

    export(tiny_keras_path, target="cortex-m4", calib=str(tiny_calib_path), output_dir=tmp_path / "t")
    original = (tmp_path / "t" / "report.md").read_text()
    (tmp_path / "t" / "report.md").unlink()
    written = write_html_report(tmp_path / "t")
    assert {p.name for p in written} == {"report.html", "report.md"}
    assert (tmp_path / "t" / "report.md").read_text() == original


def test_multi_target_folder(export_dir, tmp_path, capsys):
    for name in ("cortex-m4", "android-arm64"):
        shutil.copytree(export_dir, tmp_path / "all" / name)
    run = run_cli(capsys, "report", tmp_path / "all")
    assert run.code == 0, run.err
    assert (tmp_path / "all" / "cortex-m4" / "report.html").is_file()
    assert (tmp_path / "all" / "android-arm64" / "report.html").is_file()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"No report\.json in .* or its sub-folders"),
        ("{not json", r"report\.json is not valid JSON"),
        ('["a list"]', r"is not an edgeport report"),
    ],
)
def test_missing_or_broken_report_is_exit_2(tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "report.json").write_text(content)
    run = run_cli(capsys, "report", tmp_path)
    assert run.code == 2
    assert re.search(message, run.error_line), run.err
    assert len(run.err.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists()


def test_missing_directory_is_exit_2(tmp_path, capsys):
    run = run_cli(capsys, "report", tmp_path / "nope")
    assert run.code == 2 and "does not exist" in run.error_line


def test_chromium_decodes_every_image(export_dir, tmp_path):
    """Optional: a real browser, offline, decodes the inline PNGs (skips when chromium is absent)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the file-content checks still ran")
    page = render_html(json.loads((export_dir / "report.json").read_text()))
    probe = page.replace(
        "</body>",
        "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "document.body.setAttribute('data-decoded',i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length)})"
        "</script></body>",
    )
    (tmp_path / "probe.html").write_text(probe)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    dom = subprocess.run(
        [chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "probe.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert 'data-decoded="3/3"' in dom.stdout, dom.stderr[-500:]
    (tmp_path / "page.html").write_text(page)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *flags, "--hide-scrollbars", "--window-size=1200,3000", f"--screenshot={shot}", (tmp_path / "page.html").as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels[..., :3].std() > 0.05  # rendered text, tables and charts, not a blank page
