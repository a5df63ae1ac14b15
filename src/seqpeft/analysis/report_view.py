"""Open the Snakemake HTML report in headless Chromium and display each figure as a reader would.

The report is a single-page app: its landing page shows no figure, and a figure appears only after
the reader clicks its eye button, which calls ``app.setView({content: "img", ...})`` with the
figure's embedded data URI. A screenshot of the landing page therefore proves little. This module
writes a copy of the report with one small script appended that, after the page has loaded, makes
that same ``setView`` call for the figure named in the URL fragment and, once Chromium has decoded
the image, puts its pixel size into the page title. Chromium's ``--dump-dom`` then tells whether
the figure rendered, and ``--screenshot`` keeps a picture of it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from seqpeft.util.errors import SeqpeftInputError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg")
TITLE_PREFIX = "seqpeft-view:"

_VIEW_SCRIPT = """
<script id="seqpeft-view">
(function () {
  const path = decodeURIComponent(location.hash.slice(1));
  let requested = false;
  // React renders the report app asynchronously: wait until it exists, show the figure as the
  // eye button's click does, then wait until Chromium has decoded the image.
  const poll = setInterval(function () {
    const entry = results[path];
    if (entry === undefined) { clearInterval(poll); document.title = "%(prefix)smissing"; return; }
    if (typeof app === "undefined") { return; }
    if (!requested) {
      app.setView({content: "img", contentPath: entry.data_uri, resultPath: path});
      requested = true;
      return;
    }
    const image = Array.from(document.querySelectorAll("#app img")).find((img) => img.src === entry.data_uri);
    if (image !== undefined && image.complete && image.naturalWidth > 0) {
      clearInterval(poll);
      document.title = "%(prefix)s" + image.naturalWidth + "x" + image.naturalHeight;
    }
  }, 50);
})();
</script>
""" % {"prefix": TITLE_PREFIX}


@dataclass(frozen=True)
class FigureView:
    """How one figure of the report rendered: its path in the report and the decoded pixel size."""

    path: str
    width: int
    height: int
    screenshot: Path | None

    @property
    def shown(self) -> bool:
        return self.width > 0 and self.height > 0


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium executable to use, or a clear error saying how to get one."""
    for name in ([explicit] if explicit else CHROMIUM_NAMES):
        found = shutil.which(name)
        if found:
            return found
    raise SeqpeftInputError(explicit, "no headless Chromium found.",
                            fix="install it (Debian/Ubuntu: apt-get install -y chromium) or pass --chromium PATH.")


def report_figures(report_html: Path) -> list[str]:
    """The image results embedded in a Snakemake report, by their path as the report names them."""
    text = Path(report_html).read_text(encoding="utf-8")
    match = re.search(r'<script id="results">\s*var results = (\{.*?\});\s*</script>', text, re.DOTALL)
    if match is None:
        raise SeqpeftInputError(report_html, "this is not a Snakemake HTML report (no embedded results).",
                                fix="build it with `snakemake --report results/report.html`.")
    return sorted(path for path in json.loads(match.group(1)) if path.lower().endswith(IMAGE_SUFFIXES))


def view_figures(report_html: Path, screenshot_dir: Path | None = None, chromium: str | None = None,
                 timeout: float = 120.0) -> list[FigureView]:
    """Display every figure of the report in headless Chromium; one ``FigureView`` per figure."""
    report_html = Path(report_html).resolve()
    executable = find_chromium(chromium)
    figures = report_figures(report_html)
    text = report_html.read_text(encoding="utf-8")
    if "</body>" not in text:
        raise SeqpeftInputError(report_html, "the report has no </body>; it may be truncated.", fix="rebuild it.")
    views = []
    with tempfile.TemporaryDirectory(prefix="seqpeft-report-view-") as work:
        work = Path(work)
        viewer = work / "report.html"
        # the last </body>: embedded libraries carry the string inside their own code
        end = text.rindex("</body>")
        viewer.write_text(text[:end] + _VIEW_SCRIPT + text[end:], encoding="utf-8")
        for index, figure in enumerate(figures):
            url = f"{viewer.as_uri()}#{quote(figure, safe='')}"
            common = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={work / 'profile'}", "--window-size=1400,1000",
                      "--virtual-time-budget=15000"]
            dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
            width, height = _rendered_size(dom.stdout)
            shot = None
            if screenshot_dir is not None:
                screenshot_dir.mkdir(parents=True, exist_ok=True)
                stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(figure).with_suffix("").as_posix())
                shot = screenshot_dir / f"{index:02d}_{stem}.png"
                subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=timeout, check=True)
            views.append(FigureView(figure, width, height, shot))
    return views


def _rendered_size(dom: str) -> tuple[int, int]:
    match = re.search(rf"<title>{re.escape(TITLE_PREFIX)}(\d+)x(\d+)</title>", dom)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


_CLICK_SCRIPT = """
<script id="seqpeft-click">
// Click the headers listed in the URL fragment one after another, as a reader would, and after
// each click record the table's rows (cell texts) in a <pre> that --dump-dom returns.
window.addEventListener("load", function () {
  const headers = document.querySelectorAll("table thead th");
  const record = [];
  location.hash.slice(1).split(",").forEach(function (column) {
    headers[parseInt(column, 10)].click();
    const body = headers[0].closest("table").tBodies[0];
    record.push(Array.from(body.rows).map(function (row) {
      return Array.from(row.cells).map(function (cell) { return cell.textContent; });
    }));
  });
  const out = document.createElement("pre");
  out.id = "seqpeft-sorts";
  out.textContent = JSON.stringify(record);
  document.body.appendChild(out);
  document.title = "%(prefix)sclicked";
});
</script>
""" % {"prefix": TITLE_PREFIX}


def table_after_clicks(page_html: Path, columns: list[int], chromium: str | None = None,
                       timeout: float = 120.0) -> list[list[list[str]]]:
    """The rows (cell texts) of a page's first table after each of a reader's clicks on the
    headers ``columns`` (in order), in one headless Chromium load: what the leaderboard's sorting shows."""
    import html as html_lib

    executable = find_chromium(chromium)
    text = Path(page_html).read_text(encoding="utf-8")
    end = text.rindex("</body>")
    with tempfile.TemporaryDirectory(prefix="seqpeft-table-view-") as work:
        page = Path(work) / "page.html"
        page.write_text(text[:end] + _CLICK_SCRIPT + text[end:], encoding="utf-8")
        url = f"{page.as_uri()}#{','.join(str(c) for c in columns)}"
        dom = subprocess.run([executable, *CHROMIUM_FLAGS, f"--user-data-dir={Path(work) / 'profile'}",
                              "--virtual-time-budget=5000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=timeout).stdout
    match = re.search(r'<pre id="seqpeft-sorts">(.*?)</pre>', dom, re.S)
    if match is None:
        raise SeqpeftInputError(page_html, "Chromium did not run the page's sorting script.",
                                fix="check that the page has a table with a <thead> and that Chromium runs scripts.")
    return json.loads(html_lib.unescape(match.group(1)))
