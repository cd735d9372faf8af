"""Server-rendered SVG charts for the console: no JavaScript, no build step, no dependency.

Every function here is pure: data in, one ``markupsafe.Markup`` ``<figure>`` out, so a page
can put a chart straight into its template and a test can parse it. Each figure holds

- an ``<svg role="img">`` named by its ``<title>`` (``aria-labelledby``) and described by a
  ``<desc>`` (``aria-describedby``) that states the numbers in words;
- a legend in text (never colour alone: lines also differ by dash pattern);
- a ``<details>`` with the data as a ``<table>``, and a CSV link when the page has one.

Why hand-written SVG: the console's Content-Security-Policy allows no inline script or style,
so a JavaScript charting library would need vendoring and a nonce-free setup, and the
Playwright tests would have to wait for it to draw. Colours are presentation attributes
(``fill``/``stroke``), which that policy allows, and come from the Okabe–Ito palette, which
stays distinguishable with the common colour-vision deficiencies. Sizes are in ``viewBox``
units, so a chart scales with its container.

Every string that reaches the markup (titles, series names, labels: some come from chargers,
such as model names or error codes) is escaped. Values that are not finite (NaN, ±inf) are
gaps, never drawn and never written as ``nan``; values beyond ±1e12 are clipped in the drawing
(the table keeps them). Empty data gives a chart that says "No data", not an error.

``chart_id`` must be unique on the page: it prefixes the ids of the title and the description.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from markupsafe import Markup

__all__ = [
    "DASHES",
    "PALETTE",
    "STATE_COLOURS",
    "Estimate",
    "Layer",
    "Series",
    "WaveProgress",
    "comparison",
    "grouped_bars",
    "nice_ticks",
    "stacked_area",
    "stacked_bars",
    "time_series",
    "time_ticks",
    "wave_progress",
]

#: Okabe–Ito, ordered for contrast on the console's white cards (yellow last).
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
#: Dash patterns for lines, so series differ without colour too.
DASHES: tuple[str, ...] = ("", "7 4", "2 3", "9 3 2 3", "4 4", "1 2", "12 4", "5 2 1 2")
#: Wave progress: a job's state class and its colour (pending is light grey, outlined).
STATE_COLOURS: Mapping[str, str] = {
    "succeeded": "#009E73",
    "failed": "#D55E00",
    "running": "#56B4E9",
    "pending": "#D0D7DE",
}
_GRID = "#D0D7DE"
_AXIS = "#57606A"
_LIMIT = 1e12
_W = 640.0
_SAFE_URL = re.compile(r"^(/(?![/\\])|https?://)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Series:
    """One named line of a time series: ``(time, value)`` points; non-finite values are gaps."""

    name: str
    points: Sequence[tuple[datetime, float]]


@dataclass(frozen=True, slots=True)
class Layer:
    """One band of a stacked chart, or one bar colour of a grouped chart: a value per
    shared time or category, in the same order."""

    name: str
    values: Sequence[float]


@dataclass(frozen=True, slots=True)
class Estimate:
    """One bar of a comparison: a value and its confidence interval (``low``..``high``,
    either may be None). ``group`` (e.g. "before"/"after", "updated"/"control") picks the
    colour and the legend entry."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    group: str = ""


@dataclass(frozen=True, slots=True)
class WaveProgress:
    """One wave's jobs by state class."""

    label: str
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    pending: int = 0


# -- numbers, ticks, text ----------------------------------------------------------------------


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def _whole(values: Sequence[float]) -> bool:
    """Every value a whole number: the axis is a count."""
    return all(float(v).is_integer() for v in values if _finite(v))


def _clip(v: float) -> float:
    return max(-_LIMIT, min(_LIMIT, v))


def _fmt(v: float) -> str:
    """A short label: 3 significant digits, k/M/G/T beyond a million."""
    if not _finite(v):
        return "—"
    a = abs(v)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if a >= div:
            return f"{v / div:.3g}{suffix}"
    if a >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    if a >= 0.01:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _exact(v: float | None) -> str:
    """A table cell: integers whole, other numbers to 6 significant digits."""
    if v is None or not _finite(v):
        return "—"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.6g}"


def _n(x: float) -> str:
    """A coordinate: one decimal, no ``-0.0``."""
    s = f"{x:.1f}"
    return "0.0" if s == "-0.0" else s


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


def nice_ticks(lo: float, hi: float, count: int = 5, *, integer: bool = False) -> tuple[float, ...]:
    """Round tick values (1, 2, 2.5 or 5 × 10ⁿ apart) covering ``lo``..``hi``; ``integer``
    (counts: chargers, jobs) keeps every tick a whole number."""
    if not (_finite(lo) and _finite(hi)):
        lo, hi = 0.0, 1.0
    lo, hi = _clip(min(lo, hi)), _clip(max(lo, hi))
    if not hi - lo > 1e-9 * max(1.0, abs(lo), abs(hi)):  # equal, or too close to tell apart
        pad = abs(lo) * 0.5 or 1.0
        lo, hi = (lo - pad, hi + pad) if lo != 0 else (0.0, 1.0)
    raw = (hi - lo) / max(1, count)
    if integer:
        raw = max(raw, 1.0)
    mag = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * mag for m in steps if m * mag >= raw * 0.999)
    start = math.floor(lo / step + 1e-9) * step
    end = math.ceil(hi / step - 1e-9) * step
    digits = max(0, -math.floor(math.log10(step)) + 1)
    n = round((end - start) / step)
    return tuple(round(start + i * step, digits) + 0.0 for i in range(n + 1))


_TIME_STEPS = tuple(
    timedelta(seconds=s)
    for s in (
        1, 5, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
        86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 365 * 86400,
    )
)  # fmt: skip
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def time_ticks(start: datetime, end: datetime, count: int = 6) -> tuple[datetime, ...]:
    """Tick times on round UTC boundaries (a minute, an hour, a day, ...) within the span."""
    start, end = _utc(start), _utc(end)
    if end < start:
        start, end = end, start
    span = end - start
    if span <= timedelta(0):
        return (start,)
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    while span / step > count:
        step *= 2
    size = step.total_seconds()
    first = math.ceil((start - _EPOCH).total_seconds() / size) * size
    out = []
    at = _EPOCH + timedelta(seconds=first)
    while at <= end:
        out.append(at)
        at += step
    return tuple(out)


def _time_format(start: datetime, end: datetime) -> str:
    span = abs(end - start)
    if span >= timedelta(days=3):
        return "%Y-%m-%d"
    if span >= timedelta(hours=20):
        return "%m-%d %H:%M"
    if span >= timedelta(minutes=3):
        return "%H:%M"
    return "%H:%M:%S"


def _when(at: datetime, days: bool = False) -> str:
    """A time for the description and the table; ``days``: the date alone (daily data)."""
    return _utc(at).strftime("%Y-%m-%d" if days else "%Y-%m-%d %H:%M:%S")


def _daily(times: Sequence[datetime]) -> bool:
    """Every time at a UTC midnight: the data is per day."""
    return all(_utc(t).time() == datetime.min.time() for t in times)


def _id(chart_id: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_-]", "-", chart_id)[:60]
    return clean if clean[:1].isalpha() else f"chart-{clean}"


# -- the parts every chart shares ----------------------------------------------------------------


def _swatch(colour: str, dash: str | None = None) -> Markup:
    if dash is None:
        return Markup(
            '<svg class="evchart-key" aria-hidden="true" viewBox="0 0 12 12" width="12" '
            'height="12"><rect width="12" height="12" rx="2" fill="{c}" stroke="{s}"/></svg>'
        ).format(c=colour, s=_AXIS if colour == STATE_COLOURS["pending"] else colour)
    return Markup(
        '<svg class="evchart-key" aria-hidden="true" viewBox="0 0 24 12" width="24" '
        'height="12"><line x1="0" y1="6" x2="24" y2="6" stroke="{c}" stroke-width="3"'
        "{d}/></svg>"
    ).format(c=colour, d=Markup(' stroke-dasharray="{}"').format(dash) if dash else "")


def _legend(entries: Sequence[tuple[str, Markup]]) -> Markup:
    if not entries:
        return Markup("")
    items = Markup("").join(Markup("<li>{}{}</li>").format(key, name) for name, key in entries)
    return Markup('<ul class="evchart-legend">{}</ul>').format(items)


def _table(
    title: str, head: Sequence[str], rows: Sequence[Sequence[str]], details_id: str = ""
) -> Markup:
    th = Markup("").join(Markup('<th scope="col">{}</th>').format(h) for h in head)
    if rows:
        body = Markup("").join(
            Markup("<tr>{}</tr>").format(
                Markup('<th scope="row">{}</th>').format(r[0])
                + Markup("").join(Markup("<td>{}</td>").format(c) for c in r[1:])
            )
            for r in rows
        )
    else:
        body = Markup('<tr><td colspan="{}">No data</td></tr>').format(len(head))
    return Markup(
        '<details class="evchart-data"{}><summary>Data table</summary><table>'
        "<caption>{}</caption><thead><tr>{}</tr></thead><tbody>{}</tbody></table></details>"
    ).format(Markup(' id="{}"').format(details_id) if details_id else "", title, th, body)


def _figure(
    chart_id: str,
    title: str,
    desc: str,
    height: float,
    body: Markup,
    legend: Markup,
    table: Markup,
    csv_url: str | None,
) -> Markup:
    cid = _id(chart_id)
    if csv_url and not _SAFE_URL.match(csv_url):
        csv_url = None  # a path on evota or an http(s) address, never javascript: and friends
    csv = (
        Markup(
            '<a class="evchart-csv" href="{}" download="">CSV<span class="visually-hidden">'
            " of {}</span></a>"
        ).format(csv_url, title)
        if csv_url
        else Markup("")
    )
    return Markup(
        '<figure class="evchart" id="{cid}"><figcaption class="evchart-title">{title}</figcaption>'
        '<svg class="evchart-svg" role="img" aria-labelledby="{cid}-title" '
        'aria-describedby="{cid}-desc" viewBox="0 0 {w} {h}" preserveAspectRatio="xMidYMid meet" '
        'focusable="false" xmlns="http://www.w3.org/2000/svg">'
        '<title id="{cid}-title">{title}</title><desc id="{cid}-desc">{desc}</desc>{body}</svg>'
        '{legend}<div class="evchart-alt">{table}{csv}</div></figure>'
    ).format(
        cid=cid,
        title=title,
        desc=desc,
        w=f"{_W:g}",
        h=f"{math.ceil(height)}",
        body=body,
        legend=legend,
        table=table,
        csv=csv,
    )


def _no_data(chart_id: str, title: str, head: Sequence[str], csv_url: str | None) -> Markup:
    body = Markup(
        '<rect x="0.5" y="0.5" width="{w}" height="79" rx="4" fill="none" stroke="{g}"/>'
        '<text class="evchart-empty" x="{x}" y="45" text-anchor="middle">No data</text>'
    ).format(w=_n(_W - 1), g=_GRID, x=_n(_W / 2))
    return _figure(
        chart_id,
        title,
        "No data.",
        80,
        body,
        Markup(""),
        _table(title, head, [], f"{_id(chart_id)}-data"),
        csv_url,
    )


def _y_axis(
    ticks: Sequence[float], y: Callable[[float], float], left: float, right: float, unit: str
) -> Markup:
    """Horizontal grid lines with their labels at the left; ``y`` maps a value to a y."""
    parts = []
    for t in ticks:
        ty = y(t)
        parts.append(
            Markup(
                '<line x1="{l}" y1="{y}" x2="{r}" y2="{y}" stroke="{g}" stroke-width="1"/>'
                '<text class="evchart-tick" x="{tx}" y="{ly}" text-anchor="end">{v}</text>'
            ).format(
                l=_n(left),
                r=_n(right),
                y=_n(ty),
                g=_GRID,
                tx=_n(left - 6),
                ly=_n(ty + 4),
                v=_fmt(t),
            )
        )
    if unit:
        parts.append(
            Markup(
                '<text class="evchart-unit" x="{x}" y="11" text-anchor="start">{u}</text>'
            ).format(x=_n(4), u=unit)
        )
    return Markup("").join(parts)


def _scale(lo: float, hi: float, a: float, b: float) -> Callable[[float], float]:
    """Maps ``lo``..``hi`` linearly onto ``a``..``b`` (clipping extreme values first)."""
    span = hi - lo or 1.0
    return lambda v: a + (_clip(v) - lo) * (b - a) / span


# -- time series ---------------------------------------------------------------------------------


def time_series(
    chart_id: str,
    title: str,
    series: Sequence[Series],
    *,
    unit: str = "",
    description: str = "",
    csv_url: str | None = None,
    from_zero: bool = True,
) -> Markup:
    """One or several lines over a shared time axis (UTC), with round ticks on both axes.

    ``from_zero`` starts the value axis at 0 (counts, rates); False fits it to the data.
    The table has one row per time and one column per series.
    """
    names = [s.name for s in series]
    head = ["Time (UTC)", *[f"{n} ({unit})" if unit else n for n in names]]
    points = [
        sorted(((_utc(t), float(v)) for t, v in s.points), key=lambda p: p[0]) for s in series
    ]
    finite = [v for ps in points for _, v in ps if _finite(v)]
    times = [t for ps in points for t, v in ps if _finite(v)]
    daily = _daily([t for ps in points for t, _ in ps])
    if not finite:
        return _no_data(chart_id, title, head, csv_url)
    height, top, bottom, left, right = 240.0, 20.0, 212.0, 56.0, _W - 16
    lo = min(finite)
    hi = max(finite)
    if from_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    ticks = nice_ticks(lo, hi)
    y = _scale(ticks[0], ticks[-1], bottom, top)
    t0, t1 = min(times), max(times)
    if t0 == t1:
        t0, t1 = t0 - timedelta(minutes=30), t1 + timedelta(minutes=30)
    span = (t1 - t0).total_seconds()

    def x(at: datetime) -> float:
        return left + (at - t0).total_seconds() * (right - left) / span

    parts = [_y_axis(ticks, y, left, right, unit)]
    one = min(times) == max(times)
    fmt = ("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M") if one else _time_format(t0, t1)
    for at in (min(times),) if one else time_ticks(t0, t1):
        parts.append(
            Markup(
                '<line x1="{x}" y1="{b}" x2="{x}" y2="{b2}" stroke="{a}"/>'
                '<text class="evchart-tick" x="{x}" y="{ty}" text-anchor="middle">{v}</text>'
            ).format(
                x=_n(x(at)),
                b=_n(bottom),
                b2=_n(bottom + 4),
                a=_AXIS,
                ty=_n(bottom + 17),
                v=at.strftime(fmt),
            )
        )
    parts.append(
        Markup('<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{a}"/>').format(
            l=_n(left), r=_n(right), b=_n(bottom), a=_AXIS
        )
    )
    legend = []
    summary = []
    for i, (s, ps) in enumerate(zip(series, points, strict=True)):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]
        runs: list[list[tuple[datetime, float]]] = [[]]
        for t, v in ps:
            if _finite(v):
                runs[-1].append((t, v))
            elif runs[-1]:
                runs.append([])
        for run in runs:
            if len(run) == 1:
                t, v = run[0]
                parts.append(
                    Markup('<circle cx="{x}" cy="{y}" r="3.5" fill="{c}"/>').format(
                        x=_n(x(t)), y=_n(y(v)), c=colour
                    )
                )
            elif run:
                d = " ".join(
                    f"{'M' if j == 0 else 'L'}{_n(x(t))} {_n(y(v))}" for j, (t, v) in enumerate(run)
                )
                parts.append(
                    Markup(
                        '<path d="{d}" fill="none" stroke="{c}" stroke-width="2" '
                        'stroke-linejoin="round"{dash}><title>{name}</title></path>'
                    ).format(
                        d=d,
                        c=colour,
                        name=s.name,
                        dash=Markup(' stroke-dasharray="{}"').format(dash) if dash else "",
                    )
                )
        legend.append((s.name, _swatch(colour, dash)))
        values = [v for _, v in ps if _finite(v)]
        if values:
            summary.append(
                f"{s.name}: latest {_fmt(values[-1])}{unit and ' ' + unit}, "
                f"min {_fmt(min(values))}, max {_fmt(max(values))}"
            )
        else:
            summary.append(f"{s.name}: no data")
    desc = description or (
        f"Line chart from {_when(min(times), daily)} to {_when(max(times), daily)} UTC. "
        + "; ".join(summary)
    )
    by_time: dict[datetime, list[str]] = {}
    for i, ps in enumerate(points):
        for t, v in ps:
            by_time.setdefault(t, ["—"] * len(series))[i] = _exact(v)
    rows = [[_when(t, daily), *cells] for t, cells in sorted(by_time.items())]
    return _figure(
        chart_id,
        title,
        desc,
        height,
        Markup("").join(parts),
        _legend(legend),
        _table(title, head, rows, f"{_id(chart_id)}-data"),
        csv_url,
    )


# -- stacked area over time ----------------------------------------------------------------------


def _clean(values: Sequence[float], n: int) -> list[float]:
    """``n`` stackable values: missing, negative and non-finite ones count as 0."""
    out = [float(v) if _finite(v) and v > 0 else 0.0 for v in list(values)[:n]]
    return [_clip(v) for v in out] + [0.0] * (n - len(out))


def stacked_area(
    chart_id: str,
    title: str,
    times: Sequence[datetime],
    layers: Sequence[Layer],
    *,
    unit: str = "",
    share: bool = False,
    description: str = "",
    csv_url: str | None = None,
) -> Markup:
    """Bands stacked over time (e.g. chargers per firmware version, day by day).

    ``layers[i].values[j]`` is the amount at ``times[j]``; ``share`` draws each time as
    percentages of its total (the table keeps the amounts and adds the share).
    """
    head = ["Time (UTC)", *[layer.name for layer in layers]]
    n = len(times)
    columns = [_clean(layer.values, n) for layer in layers]
    totals = [sum(col[j] for col in columns) for j in range(n)]
    if not n or not layers or not any(totals):
        return _no_data(chart_id, title, head, csv_url)
    order = sorted(range(n), key=lambda j: _utc(times[j]))
    ts = [_utc(times[j]) for j in order]
    daily = _daily(ts)
    columns = [[col[j] for j in order] for col in columns]
    totals = [totals[j] for j in order]
    if share:
        columns = [
            [100.0 * v / totals[j] if totals[j] else 0.0 for j, v in enumerate(col)]
            for col in columns
        ]
        ticks: tuple[float, ...] = (0.0, 25.0, 50.0, 75.0, 100.0)
        shown_unit = "%"
    else:
        ticks = nice_ticks(0.0, max(totals), integer=_whole(totals))
        shown_unit = unit
    height, top, bottom, left, right = 240.0, 20.0, 212.0, 56.0, _W - 16
    y = _scale(ticks[0], ticks[-1], bottom, top)
    t0, t1 = ts[0], ts[-1]
    one = t0 == t1
    if one:
        t0, t1 = t0 - timedelta(hours=12), t1 + timedelta(hours=12)
    span = (t1 - t0).total_seconds()

    def x(at: datetime) -> float:
        return left + (at - t0).total_seconds() * (right - left) / span

    parts = [_y_axis(ticks, y, left, right, shown_unit)]
    fmt = _time_format(t0, t1) if not one else ("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M")
    for at in (ts[0],) if one else time_ticks(t0, t1):
        parts.append(
            Markup(
                '<text class="evchart-tick" x="{x}" y="{ty}" text-anchor="middle">{v}</text>'
            ).format(x=_n(x(at)), ty=_n(bottom + 17), v=at.strftime(fmt))
        )
    below = [0.0] * n
    legend = []
    for i, (layer, col) in enumerate(zip(layers, columns, strict=True)):
        colour = PALETTE[i % len(PALETTE)]
        above = [b + v for b, v in zip(below, col, strict=True)]
        if one:
            parts.append(
                Markup(
                    '<rect x="{x}" y="{y}" width="24" height="{h}" fill="{c}">'
                    "<title>{name}: {v}</title></rect>"
                ).format(
                    x=_n(x(ts[0]) - 12),
                    y=_n(y(above[0])),
                    h=_n(y(below[0]) - y(above[0])),
                    c=colour,
                    name=layer.name,
                    v=_fmt(col[0]),
                )
            )
        else:
            upper = [f"{_n(x(t))} {_n(y(v))}" for t, v in zip(ts, above, strict=True)]
            lower = [f"{_n(x(t))} {_n(y(v))}" for t, v in zip(ts, below, strict=True)]
            d = "M" + " L".join(upper) + " L" + " L".join(reversed(lower)) + " Z"
            parts.append(
                Markup(
                    '<path d="{d}" fill="{c}" fill-opacity="0.85" stroke="#fff" '
                    'stroke-width="0.5"><title>{name}</title></path>'
                ).format(d=d, c=colour, name=layer.name)
            )
        legend.append((layer.name, _swatch(colour)))
        below = above
    parts.append(
        Markup('<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{a}"/>').format(
            l=_n(left), r=_n(right), b=_n(bottom), a=_AXIS
        )
    )
    last = [
        f"{layer.name} {_fmt(col[-1])}{'%' if share else (unit and ' ' + unit)}"
        for layer, col in zip(layers, columns, strict=True)
    ]
    desc = description or (
        f"Stacked area chart of {len(layers)} series from {_when(ts[0], daily)} "
        f"to {_when(ts[-1], daily)} UTC; "
        f"at the end: " + ", ".join(last)
    )
    raw = [[_clean(layer.values, n)[j] for j in order] for layer in layers]
    rows = [
        [_when(t, daily), *[_exact(raw[i][j]) for i in range(len(layers))]]
        for j, t in enumerate(ts)
    ]
    return _figure(
        chart_id,
        title,
        desc,
        height,
        Markup("").join(parts),
        _legend(legend),
        _table(title, head, rows, f"{_id(chart_id)}-data"),
        csv_url,
    )


# -- horizontal stacked bars ---------------------------------------------------------------------


def stacked_bars(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    layers: Sequence[Layer],
    *,
    unit: str = "",
    share: bool = False,
    colours: Mapping[str, str] | None = None,
    description: str = "",
    csv_url: str | None = None,
) -> Markup:
    """One horizontal bar per category, split into the layers (e.g. per model: chargers per
    firmware version). ``share`` makes every bar 100 % wide; ``colours`` maps a layer name to
    its colour (else the palette in order). The total is written at the end of each bar."""
    head = ["", *[layer.name for layer in layers], "Total"]
    n = len(categories)
    columns = [_clean(layer.values, n) for layer in layers]
    totals = [sum(col[j] for col in columns) for j in range(n)]
    if not n or not layers:
        return _no_data(chart_id, title, head, csv_url)
    row, top, left, right = 26.0, 8.0, 150.0, _W - 56
    bottom = top + row * n
    height = bottom + 26
    if share:
        ticks: tuple[float, ...] = (0.0, 25.0, 50.0, 75.0, 100.0)
    else:
        ticks = nice_ticks(0.0, max(totals) or 1.0, integer=_whole(totals))
    x = _scale(ticks[0], ticks[-1], left, right)
    palette = [
        (colours or {}).get(layer.name, PALETTE[i % len(PALETTE)]) for i, layer in enumerate(layers)
    ]
    parts = []
    for t in ticks:
        parts.append(
            Markup(
                '<line x1="{x}" y1="{t}" x2="{x}" y2="{b}" stroke="{g}"/>'
                '<text class="evchart-tick" x="{x}" y="{ty}" text-anchor="middle">{v}</text>'
            ).format(
                x=_n(x(t)),
                t=_n(top),
                b=_n(bottom),
                g=_GRID,
                ty=_n(bottom + 16),
                v=_fmt(t) + ("%" if share else ""),
            )
        )
    if unit and not share:
        parts.append(
            Markup(
                '<text class="evchart-unit" x="{x}" y="{y}" text-anchor="end">{u}</text>'
            ).format(x=_n(left - 6), y=_n(bottom + 16), u=unit)
        )
    for j, category in enumerate(categories):
        ry = top + j * row
        parts.append(
            Markup(
                '<text class="evchart-label" x="{x}" y="{y}" text-anchor="end">{short}'
                "<title>{full}</title></text>"
            ).format(x=_n(left - 6), y=_n(ry + 17), short=_short(category, 22), full=category)
        )
        at = 0.0
        for i, layer in enumerate(layers):
            v = columns[i][j]
            if v <= 0:
                continue
            shown = 100.0 * v / totals[j] if share else v
            width = x(at + shown) - x(at)
            stroke = (
                Markup(' stroke="{}"').format(_AXIS)
                if palette[i] == STATE_COLOURS["pending"]
                else ""
            )
            parts.append(
                Markup(
                    '<rect x="{x}" y="{y}" width="{w}" height="18" fill="{c}"{s}>'
                    "<title>{cat}: {name} {v}</title></rect>"
                ).format(
                    x=_n(x(at)),
                    y=_n(ry + 4),
                    w=_n(max(width, 0.0)),
                    c=palette[i],
                    s=stroke,
                    cat=category,
                    name=layer.name,
                    v=_exact(v),
                )
            )
            at += shown
        parts.append(
            Markup('<text class="evchart-value" x="{x}" y="{y}">{v}</text>').format(
                x=_n(right + 6), y=_n(ry + 17), v=_fmt(totals[j])
            )
        )
    legend = [(layer.name, _swatch(palette[i])) for i, layer in enumerate(layers)]
    words = []
    for j, category in enumerate(categories):
        inner = ", ".join(
            f"{layer.name} {_fmt(columns[i][j])}"
            for i, layer in enumerate(layers)
            if columns[i][j] > 0
        )
        words.append(f"{category}: {inner or 'none'}")
    desc = description or ("Stacked bar chart. " + "; ".join(words))
    rows = [
        [category, *[_exact(columns[i][j]) for i in range(len(layers))], _exact(totals[j])]
        for j, category in enumerate(categories)
    ]
    return _figure(
        chart_id,
        title,
        desc,
        height,
        Markup("").join(parts),
        _legend(legend),
        _table(title, head, rows, f"{_id(chart_id)}-data"),
        csv_url,
    )


def wave_progress(
    chart_id: str,
    title: str,
    waves: Sequence[WaveProgress],
    *,
    description: str = "",
    csv_url: str | None = None,
) -> Markup:
    """Per wave, its jobs as one stacked bar: succeeded, failed, running, pending (in
    :data:`STATE_COLOURS`), the bar's length the wave's size."""
    names = ("succeeded", "failed", "running", "pending")
    layers = [Layer(name, [float(getattr(w, name)) for w in waves]) for name in names]
    return stacked_bars(
        chart_id,
        title,
        [w.label for w in waves],
        layers,
        unit="chargers",
        colours=STATE_COLOURS,
        description=description,
        csv_url=csv_url,
    )


# -- vertical grouped bars -----------------------------------------------------------------------


def grouped_bars(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Layer],
    *,
    unit: str = "",
    description: str = "",
    csv_url: str | None = None,
) -> Markup:
    """Side-by-side vertical bars per category (e.g. per gate: executed and succeeded)."""
    head = ["", *[s.name for s in series]]
    n = len(categories)
    raw = [[float(v) if _finite(v) else math.nan for v in list(s.values)[:n]] for s in series]
    raw = [r + [math.nan] * (n - len(r)) for r in raw]
    finite = [v for r in raw for v in r if _finite(v)]
    if not n or not series or not finite:
        return _no_data(chart_id, title, head, csv_url)
    height, top, bottom, left, right = 240.0, 20.0, 200.0, 56.0, _W - 16
    ticks = nice_ticks(min(0.0, *finite), max(0.0, *finite), integer=_whole(finite))
    y = _scale(ticks[0], ticks[-1], bottom, top)
    parts = [_y_axis(ticks, y, left, right, unit)]
    slot = (right - left) / n
    bar = min(36.0, slot * 0.8 / len(series))
    zero = y(0.0)
    for j, category in enumerate(categories):
        cx = left + slot * (j + 0.5)
        first = cx - bar * len(series) / 2
        for i, s in enumerate(series):
            v = raw[i][j]
            if not _finite(v):
                continue
            top_y, bot_y = sorted((y(v), zero))
            parts.append(
                Markup(
                    '<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{c}">'
                    "<title>{cat}: {name} {v}</title></rect>"
                ).format(
                    x=_n(first + i * bar + 1),
                    y=_n(top_y),
                    w=_n(max(bar - 2, 1.0)),
                    h=_n(bot_y - top_y),
                    c=PALETTE[i % len(PALETTE)],
                    cat=category,
                    name=s.name,
                    v=_exact(v),
                )
            )
        parts.append(
            Markup(
                '<text class="evchart-tick" x="{x}" y="{y}" text-anchor="middle">{short}'
                "<title>{full}</title></text>"
            ).format(
                x=_n(cx),
                y=_n(bottom + 16),
                short=_short(category, max(4, int(slot / 7))),
                full=category,
            )
        )
    parts.append(
        Markup('<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{a}"/>').format(
            l=_n(left), r=_n(right), b=_n(zero), a=_AXIS
        )
    )
    legend = [(s.name, _swatch(PALETTE[i % len(PALETTE)])) for i, s in enumerate(series)]
    words = [
        f"{category}: " + ", ".join(f"{s.name} {_fmt(raw[i][j])}" for i, s in enumerate(series))
        for j, category in enumerate(categories)
    ]
    desc = description or ("Bar chart. " + "; ".join(words))
    rows = [
        [category, *[_exact(raw[i][j]) for i in range(len(series))]]
        for j, category in enumerate(categories)
    ]
    return _figure(
        chart_id,
        title,
        desc,
        height,
        Markup("").join(parts),
        _legend(legend),
        _table(title, head, rows, f"{_id(chart_id)}-data"),
        csv_url,
    )


# -- comparison with confidence intervals --------------------------------------------------------


def comparison(
    chart_id: str,
    title: str,
    estimates: Sequence[Estimate],
    *,
    unit: str = "",
    reference: float | None = None,
    reference_label: str = "",
    interval_label: str = "95% CI",
    description: str = "",
    csv_url: str | None = None,
    colours: Mapping[str, str] | None = None,
) -> Markup:
    """Horizontal bars from 0 to each estimate with whiskers for its interval (before/after,
    updated/control, or a difference that may be negative); ``reference`` draws a dashed
    line (e.g. a gate's threshold) labelled ``reference_label``. ``colours`` maps a group to
    its colour (else the palette in order of first appearance)."""
    head = ["", "Group", "Value", f"{interval_label} low", f"{interval_label} high"]
    usable = [e for e in estimates if _finite(e.value)]
    if not usable:
        return _no_data(chart_id, title, head, csv_url)
    groups: list[str] = []
    for e in estimates:
        if e.group not in groups:
            groups.append(e.group)
    colour = {g: (colours or {}).get(g, PALETTE[i % len(PALETTE)]) for i, g in enumerate(groups)}
    ends = [0.0]
    for e in usable:
        ends += [v for v in (e.value, e.low, e.high) if v is not None and _finite(v)]
    if reference is not None and _finite(reference):
        ends.append(reference)
    ticks = nice_ticks(min(ends), max(ends))
    row, top, left, right = 28.0, 22.0, 150.0, _W - 64
    bottom = top + row * len(estimates)
    height = bottom + 26
    x = _scale(ticks[0], ticks[-1], left, right)
    parts = []
    for t in ticks:
        parts.append(
            Markup(
                '<line x1="{x}" y1="{t}" x2="{x}" y2="{b}" stroke="{g}"/>'
                '<text class="evchart-tick" x="{x}" y="{ty}" text-anchor="middle">{v}</text>'
            ).format(x=_n(x(t)), t=_n(top), b=_n(bottom), g=_GRID, ty=_n(bottom + 16), v=_fmt(t))
        )
    if unit:
        parts.append(
            Markup(
                '<text class="evchart-unit" x="{x}" y="{y}" text-anchor="end">{u}</text>'
            ).format(x=_n(left - 6), y=_n(bottom + 16), u=unit)
        )
    zero = x(0.0)
    for j, e in enumerate(estimates):
        ry = top + j * row
        parts.append(
            Markup(
                '<text class="evchart-label" x="{x}" y="{y}" text-anchor="end">{short}'
                "<title>{full}</title></text>"
            ).format(x=_n(left - 6), y=_n(ry + 18), short=_short(e.label, 22), full=e.label)
        )
        if not _finite(e.value):
            parts.append(
                Markup('<text class="evchart-value" x="{x}" y="{y}">no data</text>').format(
                    x=_n(zero + 4), y=_n(ry + 18)
                )
            )
            continue
        a, b = sorted((x(e.value), zero))
        parts.append(
            Markup(
                '<rect x="{x}" y="{y}" width="{w}" height="16" fill="{c}" fill-opacity="0.85">'
                "<title>{label}: {v}</title></rect>"
            ).format(
                x=_n(a),
                y=_n(ry + 6),
                w=_n(max(b - a, 1.0)),
                c=colour[e.group],
                label=e.label,
                v=_exact(e.value),
            )
        )
        lo = e.low if e.low is not None and _finite(e.low) else None
        hi = e.high if e.high is not None and _finite(e.high) else None
        if lo is not None or hi is not None:
            wl = x(lo if lo is not None else e.value)
            wh = x(hi if hi is not None else e.value)
            cy = ry + 14
            parts.append(
                Markup(
                    '<g stroke="{a}" stroke-width="1.5">'
                    '<line x1="{l}" y1="{cy}" x2="{h}" y2="{cy}"/>'
                    '<line x1="{l}" y1="{c1}" x2="{l}" y2="{c2}"/>'
                    '<line x1="{h}" y1="{c1}" x2="{h}" y2="{c2}"/>'
                    "<title>{label}: {il} {lo} to {hi}</title></g>"
                ).format(
                    a=_AXIS,
                    l=_n(wl),
                    h=_n(wh),
                    cy=_n(cy),
                    c1=_n(cy - 6),
                    c2=_n(cy + 6),
                    label=e.label,
                    il=interval_label,
                    lo=_exact(lo),
                    hi=_exact(hi),
                )
            )
        parts.append(
            Markup('<text class="evchart-value" x="{x}" y="{y}">{v}</text>').format(
                x=_n(right + 6), y=_n(ry + 18), v=_fmt(e.value)
            )
        )
    parts.append(
        Markup('<line x1="{z}" y1="{t}" x2="{z}" y2="{b}" stroke="{a}"/>').format(
            z=_n(zero), t=_n(top), b=_n(bottom), a=_AXIS
        )
    )
    if reference is not None and _finite(reference):
        rx = x(reference)
        parts.append(
            Markup(
                '<line x1="{x}" y1="{t}" x2="{x}" y2="{b}" stroke="#000" stroke-width="1.5" '
                'stroke-dasharray="5 3"/>'
                '<text class="evchart-tick" x="{x}" y="14" text-anchor="middle">{label}</text>'
            ).format(
                x=_n(rx),
                t=_n(top - 4),
                b=_n(bottom),
                label=f"{reference_label} {_fmt(reference)}".strip(),
            )
        )
    legend = [(g, _swatch(colour[g])) for g in groups if g]
    if any(e.low is not None or e.high is not None for e in estimates):
        legend.append((f"whiskers: {interval_label}", _swatch(_AXIS, "")))
    if reference is not None and _finite(reference):
        legend.append(
            (
                f"dashed line: {reference_label or 'reference'} {_fmt(reference)}",
                _swatch("#000", "5 3"),
            )
        )
    words = []
    for e in estimates:
        text = f"{e.label}{' (' + e.group + ')' if e.group else ''}: {_fmt(e.value)}"
        if e.low is not None or e.high is not None:
            text += f" ({interval_label} {_fmt(e.low if e.low is not None else math.nan)}"
            text += f" to {_fmt(e.high if e.high is not None else math.nan)})"
        words.append(text)
    if reference is not None and _finite(reference):
        words.append(f"reference {reference_label or ''} {_fmt(reference)}".replace("  ", " "))
    desc = description or ("Comparison. " + "; ".join(words))
    rows = [[e.label, e.group, _exact(e.value), _exact(e.low), _exact(e.high)] for e in estimates]
    return _figure(
        chart_id,
        title,
        desc,
        height,
        Markup("").join(parts),
        _legend(legend),
        _table(title, head, rows, f"{_id(chart_id)}-data"),
        csv_url,
    )
