"""The report as a PDF: headless Chromium prints `index.html` (A4, the report's own @page and print styles:
page numbers in the margin, the linked table of contents) to `report.pdf` beside it.

Two passes: the first print tells on which page each section starts (the PDF's named destinations, one per
section anchor); the contents list of the second print carries those page numbers. The PDF also gets a
document outline (bookmarks) from the headings.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

#: Names of a headless-capable Chromium on PATH, first found wins.
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Flags for a headless run with no network, no profile left behind, no first-run work.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def find_browser() -> str | None:
    """Path of a Chromium on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _run(browser: str, args: list[str], url: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="survey-chromium-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True,
                              text=True, timeout=timeout)


def print_pdf(html: Path, pdf: Path, *, browser: str | None = None, timeout: float = 300.0) -> Path:
    """Print `html` to `pdf` (A4 from the page's @page rule, no browser header or footer, outline on).
    RuntimeError naming the browser's last error line when no PDF comes out."""
    browser = browser or find_browser()
    if browser is None:
        raise RuntimeError("no Chromium found on PATH (chromium, chromium-browser, google-chrome)")
    pdf = Path(pdf)
    if pdf.exists():
        pdf.unlink()
    done = _run(browser, ["--no-pdf-header-footer", "--generate-pdf-document-outline", "--virtual-time-budget=10000",
                          "--run-all-compositor-stages-before-draw", f"--print-to-pdf={pdf.resolve()}"],
                html.resolve().as_uri(), timeout)
    if not pdf.is_file() or pdf.stat().st_size == 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{browser} wrote no PDF from {html} (exit {done.returncode}: {last[:200]})")
    return pdf


# -- where each section starts: the PDF's named destinations -----------------------------------------

def _objects(data: bytes) -> dict[int, bytes]:
    """Object number -> its body, for a PDF without object streams (what Skia writes)."""
    return {int(m.group(1)): m.group(2) for m in re.finditer(rb"(?m)^(\d+) 0 obj\s*(.*?)endobj", data, re.S)}


def _page_order(objects: dict[int, bytes]) -> list[int]:
    """Page object numbers in reading order, walking the /Pages tree from the catalog."""
    catalog = next(body for body in objects.values() if re.search(rb"/Type\s*/Catalog", body))
    root = int(re.search(rb"/Pages\s+(\d+) 0 R", catalog).group(1))
    pages: list[int] = []

    def walk(number: int) -> None:
        body = objects.get(number, b"")
        kids = re.search(rb"/Kids\s*\[(.*?)\]", body, re.S)
        if kids and re.search(rb"/Type\s*/Pages", body):
            for kid in re.findall(rb"(\d+) 0 R", kids.group(1)):
                walk(int(kid))
        else:
            pages.append(number)

    walk(root)
    return pages


def section_pages(pdf: Path, anchors: list[str]) -> dict[str, int]:
    """anchor -> the 1-based page where the element with that id starts, from the PDF's /Dests (Chromium names
    a destination after every id that a link points to); anchors the PDF does not name are left out."""
    data = Path(pdf).read_bytes()
    objects = _objects(data)
    try:
        order = {number: i + 1 for i, number in enumerate(_page_order(objects))}
    except (StopIteration, AttributeError):
        return {}
    found: dict[str, int] = {}
    for anchor in anchors:
        name = re.escape(anchor.encode())
        hit = re.search(rb"/" + name + rb"\s*\[\s*(\d+) 0 R", data) or \
            re.search(rb"\(" + name + rb"\)\s*\[\s*(\d+) 0 R", data)
        if hit and int(hit.group(1)) in order:
            found[anchor] = order[int(hit.group(1))]
    return found


def with_page_numbers(html: str, pages: dict[str, int]) -> str:
    """The report's HTML with each contents entry's page number (`<span class="page" data-for="ANCHOR">`)."""
    def fill(match: re.Match) -> str:
        page = pages.get(match.group(1))
        return f'{match.group(0)[:-len("</span>")]}{page if page else ""}</span>'
    return re.sub(r'<span class="page" data-for="([^"]+)"></span>', fill, html)


def opened(html: str) -> str:
    """The report's HTML with every <details> open: the PDF holds what the page folds."""
    return re.sub(r"<details(?![^>]*\bopen\b)", "<details open", html)


def write_pdf(index: Path, *, browser: str | None = None, timeout: float = 300.0) -> Path:
    """Print the report `index` (index.html) to report.pdf beside it, every fold open and its contents list
    numbered by the pages of a first print; returns the PDF's path."""
    index = Path(index)
    pdf = index.parent / "report.pdf"
    html = opened(index.read_text(encoding="utf-8"))
    anchors = re.findall(r'<span class="page" data-for="([^"]+)"></span>', html)
    printed = index.parent / ".report-print.html"   # beside index.html: the figures resolve the same
    try:
        printed.write_text(html, encoding="utf-8")
        print_pdf(printed, pdf, browser=browser, timeout=timeout)
        if anchors:
            printed.write_text(with_page_numbers(html, section_pages(pdf, anchors)), encoding="utf-8")
            print_pdf(printed, pdf, browser=browser, timeout=timeout)
    finally:
        printed.unlink(missing_ok=True)
    return pdf


__all__ = ["BROWSERS", "find_browser", "opened", "print_pdf", "section_pages", "with_page_numbers", "write_pdf"]
