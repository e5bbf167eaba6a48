"""The incident report an on-call engineer opens from the alert.

One self-contained HTML page per incident: what users feel, each root-cause
candidate with its evidence, the chain across layers with its lead time, and
the early warnings cited. Each KPI is plotted around the incident (its window
values against the detector's expected values, the onset marked) as inline
SVG, so the page needs nothing from the network when it is opened, and can be
attached to a ticket or mailed as it is.

The page needs the KPI series around the incident, which the incident record
does not carry: a `Reporter` keeps the recent windows of every series in a
bounded ring (`SeriesHistory`, two hours by default) and renders a page each
time an incident opens, changes or resolves.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from jinja2 import (
    Environment,
    PackageLoader,
    StrictUndefined,
    Template,
    select_autoescape,
)
from markupsafe import Markup

from foreshock.layers import Layer
from foreshock.records import (
    SILENCE,
    EarlyWarning,
    Evidence,
    Incident,
    KpiScore,
)

__all__ = [
    "Point",
    "ReportPage",
    "Reporter",
    "SeriesHistory",
    "render_incident",
    "report_url",
    "write_page",
]

log = logging.getLogger(__name__)

SeriesKey = tuple[Layer, str, str]

DEFAULT_KEEP_S = 7200.0
# Windows shown before the earliest onset and after the last update.
_BEFORE = timedelta(minutes=45)
_AFTER = timedelta(minutes=10)
# Plots per candidate: its strongest evidence first; the rest are table rows.
_PLOTS_PER_CANDIDATE = 2
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class Point(NamedTuple):
    """One window of a series, as kept for plotting."""

    start: datetime
    end: datetime
    value: float | None
    expected: float | None
    anomalous: bool


@dataclass
class _Series:
    unit: str
    points: deque[Point]


@dataclass
class SeriesHistory:
    """The recent windows of every KPI series, each in a bounded ring.

    A series keeps the windows that ended within `keep_s` of its newest one,
    and never more than `max_points`; a series that stopped reporting for
    longer than `keep_s`, measured on the newest window of any series, is
    forgotten whole. Memory is therefore bounded by the live series.
    """

    keep_s: float = DEFAULT_KEEP_S
    max_points: int = 1440
    _series: dict[SeriesKey, _Series] = field(default_factory=dict)
    _newest: datetime | None = None
    _swept: datetime | None = None

    def observe(self, score: KpiScore) -> None:
        """Keep one scored window."""
        k = score.kpi
        key = (k.layer, k.service, k.kpi)
        found = self._series.get(key)
        if found is None:
            found = _Series(k.unit, deque(maxlen=self.max_points))
            self._series[key] = found
        point = Point(k.window_start, k.window_end, k.value, score.expected, False)
        found.points.append(point._replace(anomalous=score.anomalous))

        horizon = k.window_end - timedelta(seconds=self.keep_s)
        while found.points and found.points[0].end < horizon:
            found.points.popleft()
        if self._newest is None or k.window_end > self._newest:
            self._newest = k.window_end
            self._sweep()

    def _sweep(self) -> None:
        # At most once per `keep_s` of window time: a full pass is O(series).
        assert self._newest is not None
        keep = timedelta(seconds=self.keep_s)
        if self._swept is not None and self._newest - self._swept < keep:
            return
        self._swept = self._newest
        stale = [
            key
            for key, s in self._series.items()
            if not s.points or s.points[-1].end < self._newest - keep
        ]
        for key in stale:
            del self._series[key]

    def points(self, key: SeriesKey, start: datetime, end: datetime) -> list[Point]:
        """The kept windows of a series that overlap [start, end]."""
        found = self._series.get(key)
        if found is None:
            return []
        return [p for p in found.points if p.end > start and p.start < end]

    def unit(self, key: SeriesKey) -> str:
        found = self._series.get(key)
        return "" if found is None else found.unit

    def __len__(self) -> int:
        return sum(len(s.points) for s in self._series.values())


@dataclass(frozen=True, slots=True)
class ReportPage:
    """One rendered report, named for the incident it shows."""

    incident_id: str
    status: str
    html: str

    @property
    def file_name(self) -> str:
        return f"{self.incident_id}.html"


@dataclass
class Reporter:
    """Collects what reports need and renders one when an incident changes.

    Takes every scored window (kept in the history), every early warning
    (kept while its windows are, so that an incident can cite it in full)
    and every incident (answered with its page).
    """

    history: SeriesHistory = field(default_factory=SeriesHistory)
    base_url: str | None = None
    _warnings: dict[str, EarlyWarning] = field(default_factory=dict)

    def take(self, record: object) -> list[ReportPage]:
        """Note a record; return the page it calls for, if any."""
        match record:
            case KpiScore():
                self.history.observe(record)
            case EarlyWarning():
                self._warnings[record.id] = record
                self._forget_old_warnings(record.published_at)
            case Incident():
                return [self.page(record)]
        return []

    def page(self, incident: Incident) -> ReportPage:
        html = render_incident(incident, self.history, self._warnings, self.base_url)
        return ReportPage(incident.id, incident.status, html)

    def _forget_old_warnings(self, now: datetime) -> None:
        horizon = now - timedelta(seconds=self.history.keep_s)
        old = [i for i, w in self._warnings.items() if w.published_at < horizon]
        for warning_id in old:
            del self._warnings[warning_id]


def report_url(base_url: str | None, incident_id: str) -> str | None:
    """Where the report of an incident is served, when reports are served."""
    if base_url is None:
        return None
    return f"{base_url.rstrip('/')}/{incident_id}.html"


def write_page(directory: Path, page: ReportPage) -> Path:
    """Write a page into `directory` whole: a reader never sees half a page."""
    if not _ID.match(page.incident_id):
        raise ValueError(
            f"incident id {page.incident_id!r} cannot name a report file; "
            "ids are letters, digits, '-' and '_'"
        )
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / page.file_name
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(page.html)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    log.info(
        "report written incident=%s status=%s path=%s",
        page.incident_id,
        page.status,
        target,
    )
    return target


# -- rendering -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Shown:
    """One piece of evidence as the page shows it, with its plot."""

    evidence: Evidence
    series: str
    unit: str
    ratio: str
    plot: Markup | None


def render_incident(
    incident: Incident,
    history: SeriesHistory,
    warnings: Mapping[str, EarlyWarning] | None = None,
    base_url: str | None = None,
) -> str:
    """The report of one incident as a self-contained HTML page."""
    span = _span(incident)
    first_user = min((e.onset for e in incident.user_facing), default=None)
    cited = warnings or {}

    def shown(evidence: Evidence, plot: bool = True) -> _Shown:
        return _show(evidence, history, incident, span, plot)

    return _template().render(
        incident=incident,
        url=report_url(base_url, incident.id),
        duration=_duration(incident),
        users=[shown(e) for e in incident.user_facing],
        causes=[
            (c, [shown(e, i < _PLOTS_PER_CANDIDATE) for i, e in enumerate(c.evidence)])
            for c in incident.root_causes
        ],
        chain=[(e, _relative(e.onset, first_user)) for e in incident.chain],
        warnings=[(w, cited.get(w)) for w in incident.early_warnings],
        when=_when,
        num=_num,
    )


def _show(
    evidence: Evidence,
    history: SeriesHistory,
    incident: Incident,
    span: tuple[datetime, datetime],
    plot: bool,
) -> _Shown:
    key = (evidence.layer, evidence.service, evidence.kpi)
    series = "/".join((evidence.layer.value, evidence.service, evidence.kpi))
    points = history.points(key, *span) if plot else []
    svg = None
    if points and evidence.kpi != SILENCE:
        svg = Markup(_plot(points, evidence, incident, history.unit(key)))
    unit = history.unit(key)
    # "1" is the unit of ratios: nothing to print after the number.
    shown_unit = "" if unit == "1" else unit
    return _Shown(evidence, series, shown_unit, _ratio(evidence), svg)


def _span(incident: Incident) -> tuple[datetime, datetime]:
    onsets = [e.onset for e in incident.chain + incident.user_facing]
    start = min(onsets, default=incident.opened_at) - _BEFORE
    end = (incident.resolved_at or incident.updated_at) + _AFTER
    return start, end


def _duration(incident: Incident) -> str:
    end = incident.resolved_at or incident.updated_at
    return _minutes((end - incident.opened_at).total_seconds())


def _relative(onset: datetime, users: datetime | None) -> str:
    if users is None:
        return ""
    seconds = (onset - users).total_seconds()
    if seconds == 0:
        return "with users"
    side = "before" if seconds < 0 else "after"
    return f"{_minutes(abs(seconds))} {side} users"


def _minutes(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _ratio(e: Evidence) -> str:
    if e.expected is None or e.expected == 0:
        return ""
    return f"×{e.value / e.expected:.3g}"


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M}Z"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


_environment: Environment | None = None


def _template() -> Template:
    global _environment
    if _environment is None:
        _environment = Environment(
            loader=PackageLoader("foreshock", "templates"),
            autoescape=select_autoescape(["html", "j2"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _environment.get_template("incident.html.j2")


# -- plots ----------------------------------------------------------------------

_VALUE = "#1f4e79"
_EXPECTED = "#7f7f7f"
_ALARM = "#c0392b"
_INCIDENT = "#f5b7b1"


def _plot(points: list[Point], e: Evidence, incident: Incident, unit: str) -> str:
    """One KPI around the incident as an SVG drawing: values, expected, onset."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    x = [_minute(p.start) for p in points]
    bad = [i for i, p in enumerate(points) if p.anomalous and p.value is not None]
    values = _nan(p.value for p in points)
    onset = _minute(e.onset)
    # Text stays text (smaller pages, searchable labels); element ids are
    # salted alike, so the same incident renders the same bytes.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "foreshock"}):
        fig = Figure(figsize=(7.6, 1.9), layout="constrained")
        ax = fig.add_subplot()
        ax.axvspan(
            _minute(incident.opened_at),
            _minute(incident.resolved_at or points[-1].end),
            color=_INCIDENT,
            alpha=0.35,
            lw=0,
            label="incident",
        )
        ax.plot(x, values, color=_VALUE, lw=1.3, label="value")
        ax.plot(
            x,
            _nan(p.expected for p in points),
            color=_EXPECTED,
            ls="--",
            lw=1.1,
            label="expected",
        )
        ax.scatter(
            [x[i] for i in bad],
            [values[i] for i in bad],
            color=_ALARM,
            s=14,
            zorder=3,
            label="anomalous",
        )
        ax.axvline(onset, color=_ALARM, lw=1.2, label=f"onset {e.onset:%H:%M}")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{_clock(v):%H:%M}"))
        ax.xaxis.set_major_locator(MultipleLocator(_tick_minutes(x[-1] - x[0])))
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
        ax.set_ylabel(e.kpi if unit in ("", "1") else unit, fontsize=8)
        ax.legend(loc="upper left", ncols=5, frameon=False, fontsize=7)
        ax.margins(x=0.01, y=0.25)
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    return text[text.index("<svg") :]


def _minute(moment: datetime) -> float:
    # Minutes since the epoch: the plots' x axis, labelled as UTC clock time.
    return moment.timestamp() / 60


def _clock(minute: float) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC)


def _tick_minutes(span: float) -> int:
    # About six to twelve labels whatever the span.
    return next((m for m in (5, 10, 15, 30, 60) if span / m <= 12), 120)


def _nan(values: Iterable[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]
