"""The incident report: the numbers it shows, and how a real browser draws it."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image

from foreshock.layers import Layer
from foreshock.records import Change
from foreshock.report import Reporter, SeriesHistory, render_incident, write_page
from tests.report.samples import INCIDENT, T0, WARNING, score_of, scores

CHROMIUM = "/usr/bin/chromium"
BASE_URL = "https://reports.example/foreshock"


def _text(html: str) -> str:
    """The page's words, tags and plots left out, spaces collapsed."""
    body = re.sub(r"<svg.*?</svg>", " ", html, flags=re.S)
    body = re.sub(r"<style.*?</style>|<[^>]+>", " ", body, flags=re.S)
    return " ".join(body.split())


def _rendered() -> str:
    reporter = Reporter(base_url=BASE_URL)
    for record in [*scores(), WARNING]:
        reporter.take(record)
    [page] = reporter.take(INCIDENT)
    return page.html


def test_the_report_shows_the_incident_numbers() -> None:
    html = _rendered()

    text = _text(html)

    assert "<script" not in html
    assert "[OPEN] web page_load_p95_ms degraded; probable root cause orders-db" in (
        html
    )
    # Users: 6010 ms against 1510, 6010 / 1510 = 3.98.
    assert (
        "6010 ms in the latest anomalous window, against a baseline of 1510 "
        "(×3.98); anomalous since "
        "2025-03-04 09:40Z, score 0.97." in text
    )
    # Lead time: 09:30 to 09:40.
    assert "turned anomalous 10 min (600 s) before users were affected" in text
    # The chain, oldest first, relative to the users' onset.
    assert (
        "2025-03-04 09:30Z 10 min before users database orders-db ▲ query_p95_ms "
        "900 102 2025-03-04 09:40Z with users frontend web ▲ page_load_p95_ms "
        "6010 1510" in text
    )
    # The candidate: score 1.3125 shown as 1.31, 900 / 102 = 8.82.
    assert (
        "#1 orders-db database, score 1.31, onset 2025-03-04 09:30Z, "
        "1 hop from users" in text
    )
    assert "anomalous 10 min before users were affected" in text
    assert (
        "database/orders-db/query_p95_ms up 900 ms 102 ×8.82 2025-03-04 09:30Z 0.99"
        in text
    )
    assert (
        "Published 2025-03-04 09:31Z: trouble in orders-db (database) since "
        "2025-03-04 09:30Z; at risk: web." in text
    )
    assert f"{BASE_URL}/inc-web-0940.html" in text


def test_each_cited_series_is_plotted_around_the_incident() -> None:
    html = _rendered()

    plots = re.findall(r'<div class="plot" title="([^"]+)"><svg.*?</svg>', html, re.S)

    assert plots == [
        "frontend/web/page_load_p95_ms",
        "database/orders-db/query_p95_ms",
    ]
    # Onsets are labelled on their plots; the axis is clock time.
    assert "onset 09:40" in html and "onset 09:30" in html
    assert "09:20" in html


def test_a_series_without_history_says_so_instead_of_plotting() -> None:
    html = render_incident(INCIDENT, SeriesHistory())

    assert "<svg" not in html
    assert "No KPI windows of this series are kept to plot." in html
    # The warning is cited by id even when its details are gone.
    assert "ew-orders-db-0930" in html
    assert "Published before the reports' memory began." in html


def test_the_history_keeps_only_its_last_two_hours() -> None:
    history = SeriesHistory(keep_s=7200)
    for record in scores(minutes=180):
        history.observe(record)

    web = (Layer.FRONTEND, "web", "page_load_p95_ms")
    kept = history.points(web, T0, T0 + timedelta(hours=4))

    # Windows 09:00 to 11:59 seen; those that ended before 10:00 are gone.
    assert kept[0].start == T0 + timedelta(minutes=59)
    assert len(kept) == 121
    assert len(history) == 2 * 121


def test_a_series_that_stopped_is_forgotten() -> None:
    history = SeriesHistory(keep_s=3600)
    stopped = score_of(Layer.FRONTEND, "search", "page_load_p95_ms", 0, 900.0, 900.0)
    history.observe(stopped)

    for record in scores(minutes=200)[-2:]:
        history.observe(record)

    search = (Layer.FRONTEND, "search", "page_load_p95_ms")
    assert history.points(search, T0, T0 + timedelta(hours=4)) == []
    # Only the two series still reporting, one window each, are left.
    assert len(history) == 2


def test_headless_chromium_draws_the_report(tmp_path: Path) -> None:
    assert shutil.which(CHROMIUM), (
        f"{CHROMIUM} is missing: run scripts/install-test-services.sh"
    )
    page = Reporter(base_url=BASE_URL)
    for record in [*scores(), WARNING]:
        page.take(record)
    path = write_page(tmp_path / "reports", page.page(INCIDENT))
    shot = tmp_path / "report.png"

    _screenshot(path, shot, tmp_path / "profile")

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        grey = image.convert("L")
        histogram = grey.histogram()
    inked = sum(histogram[:200])
    # Text, tables and two plots: far more than a blank page, far less than a
    # page drawn over entirely.
    assert 20_000 < inked < 1280 * 2000 // 3
    # The red status badge and onset lines are there.
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None
    reds = sum(n for n, (r, g, b) in colours if r > 170 and g < 90 and b < 90)
    assert reds > 500


def _screenshot(page: Path, shot: Path, profile: Path) -> None:
    profile.mkdir()
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not shot.exists():
        pytest.fail(f"chromium failed ({done.returncode}):\n{done.stderr[-2000:]}")


def test_the_report_shows_the_deploys_beside_the_incident() -> None:
    deploy = Change(
        id="chg-1",
        time=T0 - timedelta(minutes=12),
        layer=Layer.DATABASE,
        service="orders-db",
        change_type="configuration",
        version="pool-size-4",
        description="connection pool cut from 16 to 4",
    )
    reporter = Reporter(base_url=BASE_URL)
    for record in scores():
        reporter.take(record)

    [page] = reporter.take(INCIDENT.model_copy(update={"changes": [deploy]}))

    text = _text(page.html)
    assert "configuration pool-size-4 of orders-db" in text
    assert "connection pool cut from 16 to 4" in text
    assert "No deploy or other change" in _text(_rendered())
