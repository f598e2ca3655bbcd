"""Charts of the reports people would rather look at than read: activity over time, answer latency per
agent, the who-answers-whom graph and silence per agent; and one HTML page with every report.

Drawn on matplotlib's Agg canvas, figure by figure without pyplot's global state: no display needed, the
same picture on every machine, and safe in any thread.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch
from matplotlib.ticker import MaxNLocator

from blipflow.analytics.output import cell_text
from blipflow.analytics.reports import Bucket, Query, Selection

AGENT_COLOR = "#d95f02"
PERSON_COLOR = "#1b9e77"
OTHERS_COLOR = "#bbbbbb"
MOST_AUTHORS = 8  # activity: the busiest authors get their own colour, the rest are "everyone else"
MOST_EDGES = 40  # who-answers-whom: the busiest edges, so the graph stays readable
BUCKET_WIDTH = {Bucket.hour: timedelta(hours=1), Bucket.day: timedelta(days=1), Bucket.week: timedelta(weeks=1)}
HTML_ROWS = 50


def activity_chart(table: pa.Table, chosen: Selection) -> Figure:
    """Stacked bars of blips per period, one colour for each of the busiest authors."""
    rows = table.to_pylist()
    periods = sorted({row["period"] for row in rows})
    totals: dict[str, int] = {}
    agents = {row["author"] for row in rows if row["agent"]}
    for row in rows:
        totals[row["author"]] = totals.get(row["author"], 0) + row["blips"]
    busiest = sorted(totals, key=lambda author: (-totals[author], author))[:MOST_AUTHORS]
    series = {author: [0] * len(periods) for author in [*busiest, "everyone else"]}
    where = {period: index for index, period in enumerate(periods)}
    for row in rows:
        name = row["author"] if row["author"] in series else "everyone else"
        series[name][where[row["period"]]] += row["blips"]
    figure, axes = new_figure(11, 5)
    width = BUCKET_WIDTH[chosen.bucket] * 0.85
    bottom = [0] * len(periods)
    colors = colormaps["tab10"].colors
    for index, (name, counts) in enumerate(series.items()):
        if not any(counts):
            continue
        label = f"{name} (agent)" if name in agents else name
        color = OTHERS_COLOR if name == "everyone else" else colors[index % len(colors)]
        axes.bar(periods, counts, width=width, bottom=bottom, label=label, color=color, align="edge")
        bottom = [low + count for low, count in zip(bottom, counts)]
    axes.set_title(f"Blips per {chosen.bucket.value} (UTC)")
    axes.set_ylabel("blips")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    figure.autofmt_xdate()
    return figure


def latency_chart(table: pa.Table, chosen: Selection) -> Figure:
    """Each agent's answer time as a box: 25-75 %, median line, whiskers 10-90 %, diamond the mean."""
    rows = table.to_pylist()
    stats = [{"label": f"{row['agent']} ({row['replies']})", "med": row["median_ms"] / 1000,
              "q1": row["p25_ms"] / 1000, "q3": row["p75_ms"] / 1000, "whislo": row["p10_ms"] / 1000,
              "whishi": row["p90_ms"] / 1000, "mean": row["mean_ms"] / 1000, "fliers": []} for row in rows]
    figure, axes = new_figure(10, 1.2 + 0.35 * len(stats))
    axes.bxp(stats, orientation="horizontal", showmeans=True, showfliers=False, patch_artist=True,
             boxprops={"facecolor": "#fdd0a2", "edgecolor": AGENT_COLOR},
             meanprops={"marker": "D", "markerfacecolor": AGENT_COLOR, "markeredgecolor": AGENT_COLOR})
    axes.invert_yaxis()  # fastest first, as the report lists them
    lowest = min(stat["whislo"] for stat in stats)
    if lowest > 0 and max(stat["whishi"] for stat in stats) / lowest > 50:
        axes.set_xscale("log")
    axes.set_xlabel("seconds from the blip answered to the answer (replies in brackets)")
    axes.set_title("How fast agents answer")
    axes.grid(axis="x", alpha=0.3)
    return figure


def graph_chart(table: pa.Table, chosen: Selection) -> Figure:
    """Authors as nodes (agents inside, people around them), replies as arrows as thick as their count."""
    edges = table.to_pylist()[:MOST_EDGES]
    is_agent: dict[str, bool] = {}
    weight: dict[str, int] = {}
    for edge in edges:
        is_agent[edge["source"]] = edge["source_is_agent"]
        is_agent[edge["target"]] = edge["target_is_agent"]
        for end in (edge["source"], edge["target"]):
            weight[end] = weight.get(end, 0) + edge["replies"]
    groups = sorted([sorted(name for name, agent in is_agent.items() if agent),
                     sorted(name for name, agent in is_agent.items() if not agent)], key=len)
    # The smaller group in the middle (one node: the centre), the larger around it.
    place = {**circle(groups[0], 0.0 if len(groups[0]) == 1 else 0.4 if groups[1] else 1.0, offset=0.5),
             **circle(groups[1], 1.0)}
    figure, axes = new_figure(10, 10)
    heaviest = max(edge["replies"] for edge in edges)
    for edge in edges:
        width = 0.6 + 5 * edge["replies"] / heaviest
        arrow = FancyArrowPatch(place[edge["source"]], place[edge["target"]], arrowstyle="-|>", mutation_scale=12,
                                linewidth=width, color=AGENT_COLOR if edge["source_is_agent"] else PERSON_COLOR,
                                alpha=0.55, connectionstyle="arc3,rad=0.15", shrinkA=14, shrinkB=14)
        axes.add_patch(arrow)
        if len(edges) <= 25:
            (x1, y1), (x2, y2) = place[edge["source"]], place[edge["target"]]
            # beside the curve's middle, on the side arc3 bends to
            axes.annotate(str(edge["replies"]), ((x1 + x2) / 2 + 0.08 * (y2 - y1), (y1 + y2) / 2 - 0.08 * (x2 - x1)),
                          ha="center", va="center", fontsize=9, color="#333333")
    biggest = max(weight.values())
    for name, (x, y) in place.items():
        axes.scatter([x], [y], s=120 + 900 * weight[name] / biggest, zorder=3,
                     color=AGENT_COLOR if is_agent[name] else PERSON_COLOR, edgecolors="white")
        outward = math.hypot(x, y) > 0.5  # labels of the outer ring go outside it, the others below their node
        axes.annotate(name, (x, y), xytext=(x * 1.1, y * 1.1) if outward else (x, y - 0.07),
                      textcoords="data", fontsize=9, zorder=4,
                      ha=("left" if x > 0.05 else "right" if x < -0.05 else "center") if outward else "center",
                      va=("bottom" if y > 0.05 else "top" if y < -0.05 else "center") if outward else "top")
    axes.set_xlim(-1.6, 1.6)
    axes.set_ylim(-1.3, 1.3)
    axes.set_aspect("equal")
    axes.axis("off")
    shown = f"the {len(edges)} busiest of {table.num_rows} edges" if table.num_rows > len(edges) else "every edge"
    axes.set_title(f"Who answers whom ({shown}; agents orange, people green, arrows: replier → replied-to)")
    return figure


def silence_chart(table: pa.Table, chosen: Selection) -> Figure:
    """Each agent's windows by outcome, with its silence rate."""
    rows = table.to_pylist()
    figure, axes = new_figure(10, 1.2 + 0.35 * len(rows))
    names = [row["agent"] for row in rows]
    left = [0] * len(rows)
    for outcome, color in (("answered", PERSON_COLOR), ("silent", "#7570b3"), ("failed", "#e7298a"),
                           ("open", OTHERS_COLOR)):
        counts = [row[outcome] for row in rows]
        axes.barh(names, counts, left=left, color=color, label=outcome)
        left = [low + count for low, count in zip(left, counts)]
    for index, row in enumerate(rows):
        if row["silence_rate"] is not None:
            axes.annotate(f" {row['silence_rate']:.0%} silent", (left[index], index), va="center", fontsize=9)
    axes.invert_yaxis()
    axes.set_xlabel("windows")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(0, max(left) * 1.2)  # room for the rates
    axes.margins(y=0.01)
    axes.set_title("What agents did with their windows")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return figure


def new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots()


def circle(names: list[str], radius: float, offset: float = 0.0) -> dict[str, tuple[float, float]]:
    count = max(len(names), 1)
    return {name: (radius * math.cos(2 * math.pi * (index + offset) / count + math.pi / 2),
                   radius * math.sin(2 * math.pi * (index + offset) / count + math.pi / 2))
            for index, name in enumerate(names)}


CHARTS: dict[str, Callable[[pa.Table, Selection], Figure]] = {
    "activity": activity_chart,
    "latency": latency_chart,
    "who-answers-whom": graph_chart,
    "silence": silence_chart,
}


def save_chart(report: str, table: pa.Table, chosen: Selection, target: Path | BinaryIO,
               form: str | None = None) -> None:
    """Draw `report` (a name in CHARTS; its table not empty) into `target`: PNG, SVG or PDF, by `form` or else
    by the file's suffix."""
    CHARTS[report](table, chosen).savefig(target, format=form, dpi=100)


def chart_png(report: str, table: pa.Table, chosen: Selection) -> bytes:
    buffer = io.BytesIO()
    save_chart(report, table, chosen, buffer, "png")
    return buffer.getvalue()


def html_report(results: dict[str, tuple[Query, pa.Table]], chosen: Selection, path: Path,
                handles: Mapping[str, str]) -> None:
    """One self-contained page: every report's chart (if it has one) and its first rows. At-uris show as
    handle/rkey (`handles`: DID → handle) linking to the whole uri; times in milliseconds in human units."""
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>blipflow analytics</title>"
             f"<style>{PAGE_STYLE}</style></head><body>",
             f"<h1>blipflow analytics</h1><p class='note'>{html.escape(chosen.describe())}; made {made}</p>"]
    for name, (report, table) in results.items():
        parts.append(f"<section id='{html.escape(name)}'><h2>{html.escape(name)}</h2>"
                     f"<p class='note'>{html.escape(report.summary)}</p>")
        if table.num_rows == 0:
            parts.append("<p>Nothing to report for this selection.</p></section>")
            continue
        if name in CHARTS:
            image = base64.b64encode(chart_png(name, table, chosen)).decode()
            parts.append(f"<img alt='{html.escape(name)} chart' src='data:image/png;base64,{image}'>")
        parts.append(html_table(table, handles))
        parts.append("</section>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def html_table(table: pa.Table, handles: Mapping[str, str]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in table.column_names)
    body = "".join("<tr>" + "".join(f"<td>{html_cell(column, value, handles)}</td>" for column, value in row.items())
                   + "</tr>" for row in table.slice(0, HTML_ROWS).to_pylist())
    more = f"<p class='note'>first {HTML_ROWS} of {table.num_rows} rows</p>" if table.num_rows > HTML_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def html_cell(column: str, value: Any, handles: Mapping[str, str]) -> str:
    if isinstance(value, str) and value.startswith("at://"):
        return (f"<a class='whole' href='{html.escape(value)}' title='{html.escape(value)}'>"
                f"{html.escape(short_uri(value, handles))}</a>")
    if column.endswith("_ms") and isinstance(value, (int, float)):
        return f"<span class='whole'>{html.escape(human_duration(value))}</span>"
    if isinstance(value, str) and value.startswith("did:"):  # kept whole for copying, broken where it must
        return f"<span class='id'>{html.escape(value)}</span>"
    if isinstance(value, datetime):  # the date over the time where the column is narrow
        return " ".join(f"<span class='whole'>{html.escape(part)}</span>" for part in cell_text(value).split(" "))
    return html.escape(cell_text(value))


def short_uri(uri: str, handles: Mapping[str, str]) -> str:
    """`at://did/collection/rkey` as `handle/rkey` (a DID with no known handle: cut short)."""
    did, _, rest = uri.removeprefix("at://").partition("/")
    rkey = rest.rpartition("/")[2] or rest
    author = handles.get(did) or (did if len(did) <= 20 else did[:16] + "…")
    return f"{author}/{rkey}"


def human_duration(milliseconds: float) -> str:
    """`204 ms`, `12.5 s`, `3 min 16 s`, `2 h 5 min`, `3 d 4 h`: two units at most, as a person says it."""
    if milliseconds < 999.5:
        return f"{milliseconds:.3g} ms"
    if milliseconds < 59_950:
        return f"{milliseconds / 1000:.3g} s"
    seconds = round(milliseconds / 1000)
    for unit, size, smaller, smaller_size in (("d", 86_400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if seconds >= size:
            whole, rest = divmod(seconds, size)
            part = rest // smaller_size
            return f"{whole} {unit}" + (f" {part} {smaller}" if part else "")
    return f"{seconds} s"


PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
.note { color: #666; }
img { max-width: 100%; }
table { border-collapse: collapse; font-size: .85em; margin-top: 1em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
td { max-width: 32em; overflow-wrap: break-word; }
.whole { white-space: nowrap; }  /* a short uri, a time or a duration reads on one line */
.id { overflow-wrap: anywhere; }
a { color: inherit; }
th { background: #f4f4f4; }
"""
