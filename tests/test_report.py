"""The HTML/Markdown report: content, self-contained images, and a real render in headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from specbench.cli import main
from specbench.report.build import build_report
from specbench.report.history import append
from tests.analysis_fixtures import make_results_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
# Appended to a test copy of the page (the report itself has no scripts): after load, counts
# images that failed to decode and writes the count into the DOM that --dump-dom prints.
IMAGE_PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (img) { return !img.complete || img.naturalWidth === 0; });
  var out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = "images=" + images.length + " broken=" + broken.length;
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    results = make_results_dir(root / "results", tasks=("synthetic-arith", "gsm8k"), divergent_prompts=(3,))
    make_results_dir(root / "results", backend="hf", oom_k=4)
    history = root / "history.jsonl"
    append(results, history, date="2026-01-01T00:00:00+00:00")
    append(results, history, date="2026-01-02T00:00:00+00:00")
    out = build_report(results, root / "out", history)
    return out, results


def test_report_sections_in_order(report):
    out, _ = report
    page = (out / "index.html").read_text()
    headings = ["Verdicts on published claims", "Throughput per model size", "Speedup vs draft length",
                "Acceptance by draft position", "Measured vs predicted speedup", "All cells", "Equivalence",
                "Quality", "Failed cells", "Environment of every run", "History", "Metric definitions"]
    positions = [page.index(f">{h}") for h in headings]
    assert positions == sorted(positions)
    # The verdict table comes before any figure, with every shipped claim in it.
    assert page.index("<table>") < page.index("<img")
    assert "gemma4.27b-a100-2.7x-tokens-per-s" in page and "leviathan2023.t5xxl-2x-3x" in page
    assert "not applicable here" in page and "ran on CPU" in page
    assert "CUDA out of memory" in page  # the oom cell is listed with its message
    assert "<script" not in page  # opens from disk, nothing to run


def test_images_are_embedded_png_and_files_exist(report):
    out, _ = report
    page = (out / "index.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 6  # throughput, speedup vs k, acceptance, measured vs predicted, quality, history
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    for name in ("tokens_per_s_by_size", "speedup_vs_k", "acceptance_by_position", "measured_vs_predicted",
                 "quality", "history"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
        ElementTree.parse(out / "figures" / f"{name}.svg")  # well-formed SVG
    markdown = (out / "index.md").read_text()
    assert markdown.index("| claim |") < markdown.index("![")
    for link in re.findall(r"\]\((figures/[^)]+)\)", markdown):
        assert (out / link).is_file(), link


def _render_probe(page: Path, profile: Path) -> str:
    result = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                             "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r"images=(\d+) broken=(\d+)", result.stdout)
    assert match, f"chromium printed no probe result: {result.stderr[-500:]}"
    return match.group(0)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    out, _ = report
    page = (out / "index.html").read_text()
    probe = out / "probe.html"
    probe.write_text(page.replace("</body>", IMAGE_PROBE + "</body>"))
    assert _render_probe(probe, tmp_path / "profile") == "images=6 broken=0"
    # Planted: one image with corrupted data must be reported broken, or the check proves nothing.
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("base64,iVBOR", "base64,AAAA", 1).replace("</body>", IMAGE_PROBE + "</body>"))
    assert _render_probe(broken, tmp_path / "profile") == "images=6 broken=1"
    probe.unlink()

    screenshot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2400",
                    f"--screenshot={screenshot}", (out / "index.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[0] == 2400 and pixels.std() > 0.05  # not a blank page
    shutil.copy(screenshot, out / "screenshot.png")


def test_report_regenerates_tables_when_missing(report, tmp_path):
    _, results = report
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    shutil.rmtree(copy / "tables")
    assert main(["report", str(copy), "--out", str(tmp_path / "again")]) == 0
    assert (copy / "tables" / "cells.parquet").is_file() and (tmp_path / "again" / "index.html").is_file()


def test_report_on_missing_results_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "results directory not found" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_default_workflow_report_has_every_verdict_and_renders(request, tmp_path):
    """On the default (CPU, toy pair) run: every claim gets a verdict, each not-applicable one says why."""
    try:
        results = Path(request.getfixturevalue("default_workflow_run"))
    except pytest.FixtureLookupError:
        pytest.skip("the workflow's default_workflow_run fixture is not available")
    from specbench.claims import NOT_APPLICABLE, load_claims
    from specbench.workflow.aggregate import load_tables

    out = build_report(results, tmp_path / "report")
    verdicts = load_tables(results)["verdicts"].to_dict("records")
    assert {v["claim_id"] for v in verdicts} == {c.id for c in load_claims()}
    for verdict in verdicts:
        if verdict["verdict"] == NOT_APPLICABLE:
            assert verdict["closest"] and verdict["reason"], verdict["claim_id"]
    page = (out / "index.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", IMAGE_PROBE + "</body>"))
    assert _render_probe(probe, tmp_path / "profile").endswith("broken=0")
