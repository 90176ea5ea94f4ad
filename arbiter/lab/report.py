"""A run's report for an operator: `timeline.svg` (the picture) and `timeline.txt` (every event, one per line).

The SVG is hand-written (no dependency) and reads top to bottom: for each node a lane with the VIPs it held (one
colour per VIP) and, when keepalived reported them, its VRRP states; with the arbiter, its gate per instance (open
or closed, from the agent's decisions) and every fence of that node (a purple mark: requested, confirmed OFF or
failed) and BMC power change (a black mark); then "client ARP", the node whose MAC answered
the client's ARP for each VIP. Split brain is drawn in red across the node lanes (two nodes holding one VIP) and in
the client lane (two MACs answering). Faults and heals are dashed vertical lines, labelled at the top. Times are
seconds since `t0`. The caption repeats the checker's figures and violations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from arbiter.lab.checker import Verdict, arp_answers, dual_periods, hold_intervals
from arbiter.lab.events import DECISION, FAULT, FENCE, GATE, HEAL, NOTE, POWER, VIP_ADD, VIP_DEL, VRRP_STATE, Event

RED = "#d62728"
VIP_COLOURS = ["#17becf", "#9467bd", "#8c564b", "#bcbd22", "#1f9e89"]
NODE_COLOURS = ["#1f77b4", "#ff7f0e", "#e377c2", "#7f7f7f", "#2ca02c", "#8c6d31"]
STATE_COLOURS = {
    "MASTER": "#2ca02c",
    "BACKUP": "#aec7e8",
    "FAULT": "#ff9f1c",
    "STOP": "#555555",
}
OTHER_STATE = "#dddddd"
GATE_COLOURS = {"open": "#98df8a", "closed": "#ffbb78"}
FENCE_COLOUR = "#6a3d9a"
POWER_COLOUR = "#000000"
NO_REPLY = "#f0f0f0"
UNKNOWN_MAC = "#999999"
FAULT_COLOUR = "#b00000"
HEAL_COLOUR = "#007a00"

WIDTH = 1200
LEFT = 190
RIGHT = 30
ROW = 18
ROW_GAP = 4
LANE_GAP = 12
CHAR_W = 6.3  # rough width of one character at font-size 11, to lay labels out without a font engine


@dataclass
class _Svg:
    parts: list[str] = field(default_factory=list)

    def rect(self, x: float, y: float, w: float, h: float, fill: str, *, tip: str = "", **attrs: str) -> None:
        extra = "".join(f" {k.rstrip('_').replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
        body = f"<title>{escape(tip)}</title>" if tip else ""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{h:.1f}" fill={quoteattr(fill)}{extra}>'
            f"{body}</rect>"
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str, **attrs: str) -> None:
        extra = "".join(f" {k.rstrip('_').replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke={quoteattr(stroke)}{extra}/>'
        )

    def text(self, x: float, y: float, s: str, **attrs: str) -> None:
        extra = "".join(f" {k.rstrip('_').replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(s)}</text>')


def _nice_step(span: float, target: int = 12) -> float:
    raw = span / target
    base = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if base * m >= raw:
            return float(base * m)
    return float(base * 10)


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "none"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.2f} s"


def write_timeline_txt(path: Path, events: Sequence[Event], t0: float) -> Path:
    lines = [f"{e.t - t0:.3f} {e.kind} {e.node or '-'} {e.detail}".rstrip() for e in sorted(events, key=lambda e: e.t)]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_report(
    dir: Path,
    timeline_events: list[Event],
    t0: float,
    nodes: list[str],
    vips: list[str],
    verdict_by_vip: dict[str, Verdict],
    title: str,
) -> list[Path]:
    """Write `timeline.svg` and `timeline.txt` into `dir` (created if needed); return their paths."""
    dir.mkdir(parents=True, exist_ok=True)
    svg_path = dir / "timeline.svg"
    svg_path.write_text(render_svg(timeline_events, t0, nodes, vips, verdict_by_vip, title), encoding="utf-8")
    return [svg_path, write_timeline_txt(dir / "timeline.txt", timeline_events, t0)]


def render_svg(
    events: Sequence[Event],
    t0: float,
    nodes: Sequence[str],
    vips: Sequence[str],
    verdict_by_vip: dict[str, Verdict],
    title: str,
) -> str:
    events = sorted(events, key=lambda e: e.t)
    all_nodes = list(nodes) + sorted(
        {e.node for e in events if e.kind in (VIP_ADD, VIP_DEL, VRRP_STATE) and e.node and e.node not in nodes}
    )
    end_abs = max([e.t for e in events] + [t0 + 1.0])
    for judged in verdict_by_vip.values():
        end_abs = max([end_abs] + [end for spans in judged.intervals.values() for _, end in spans])
    intervals = {
        vip: verdict_by_vip[vip].intervals if vip in verdict_by_vip else hold_intervals(events, all_nodes, vip, end_abs)
        for vip in vips
    }
    periods = {
        vip: verdict_by_vip[vip].dual_periods if vip in verdict_by_vip else dual_periods(intervals[vip]) for vip in vips
    }
    t_min = min([0.0] + [e.t - t0 for e in events])
    t_max = end_abs - t0
    span = max(t_max - t_min, 1e-3)
    plot_w = WIDTH - LEFT - RIGHT

    def x_of(t_abs: float) -> float:
        return LEFT + (t_abs - t0 - t_min) / span * plot_w

    vip_colour = {vip: VIP_COLOURS[i % len(VIP_COLOURS)] for i, vip in enumerate(vips)}
    node_colour = {n: NODE_COLOURS[i % len(NODE_COLOURS)] for i, n in enumerate(all_nodes)}
    svg = _Svg()
    back, grid = _Svg(), _Svg()  # lane backgrounds and grid lines: drawn first, behind the data

    # Fault and heal labels go on the top rows, staggered so they never overlap.
    marks = [e for e in events if e.kind in (FAULT, HEAL)]
    label_rows: list[float] = []
    placed: list[tuple[Event, int, str]] = []
    for e in marks:
        label = f"{e.kind.upper()}{' ' + e.node if e.node else ''}: {e.detail}" if e.detail else e.kind.upper()
        x = x_of(e.t)
        row = next((i for i, right in enumerate(label_rows) if right < x), len(label_rows))
        if row == len(label_rows):
            label_rows.append(0.0)
        label_rows[row] = x + 4 + CHAR_W * len(label)
        placed.append((e, row, label))
    any_dual = any(periods[vip] for vip in vips)
    top = 44 + 14 * len(label_rows) + (14 if any_dual else 0)  # a row for the split-brain labels

    y = top
    lanes_top = y
    vip_row_y: dict[tuple[str, str], float] = {}
    for node in all_nodes:
        lane_y = y
        svg.text(8, y + 13, f"node {node}", font_weight="bold")
        # VIPs held by this node: one row per VIP.
        for vip in vips:
            vip_row_y[(node, vip)] = y
            svg.text(LEFT - 8, y + 13, vip, text_anchor="end", fill="#555")
            for h_start, h_end in intervals[vip].get(node, []):
                tip = (
                    f"{node} holds {vip} from {h_start - t0:.3f} s to {h_end - t0:.3f} s "
                    f"({(h_end - h_start) * 1000:.0f} ms)"
                )
                svg.rect(
                    x_of(h_start), y, x_of(h_end) - x_of(h_start), ROW, vip_colour[vip], tip=tip, class_="vip-held"
                )
            y += ROW + ROW_GAP
        # keepalived's view of itself, one row per VRRP instance.
        states = [e for e in events if e.kind == VRRP_STATE and e.node == node]
        instances = list(dict.fromkeys(e.detail.split()[0] for e in states if e.detail.split()))
        for inst in instances:
            svg.text(LEFT - 8, y + 13, f"keepalived {inst}", text_anchor="end", fill="#555")
            mine = [e for e in states if e.detail.split()[0] == inst]
            for i, e in enumerate(mine):
                state = e.detail.split()[1] if len(e.detail.split()) > 1 else "?"
                s_end = _until(mine[i + 1].t if i + 1 < len(mine) else end_abs, e.t, events, node)
                x1, x2 = x_of(e.t), x_of(s_end)
                tip = f"{node} {inst} {state} from {e.t - t0:.3f} s to {s_end - t0:.3f} s"
                svg.rect(
                    x1, y + 3, x2 - x1, ROW - 6, STATE_COLOURS.get(state, OTHER_STATE), tip=tip, class_="vrrp-state"
                )
                if x2 - x1 > CHAR_W * len(state) + 4:
                    svg.text(x1 + 2, y + 13, state, font_size="9", fill="#000")
            y += ROW + ROW_GAP
        y = _gate_rows(svg, events, node, y, end_abs, t0, x_of)
        back.rect(LEFT - 4, lane_y - 3, plot_w + 8, y - lane_y + 2, "#fafafa", class_="lane")
        y += LANE_GAP
    nodes_bottom = y - LANE_GAP

    # The client's view: which node's MAC answers ARP for each VIP. When two answer, the first responders seen anywhere
    # in the run name their MACs.
    mac_node = {a.mac: a.node for vip in vips for a in arp_answers(events, vip) if a.node not in ("", "?")}
    back.rect(LEFT - 4, y - 3, plot_w + 8, len(vips) * (ROW + ROW_GAP) + 2, "#fafafa", class_="lane")
    svg.text(8, y + 13, "client ARP", font_weight="bold")
    for vip in vips:
        svg.text(LEFT - 8, y + 13, vip, text_anchor="end", fill="#555")
        answers = arp_answers(events, vip)
        for i, a in enumerate(answers):
            a_end = answers[i + 1].t if i + 1 < len(answers) else end_abs
            x1, x2 = x_of(a.t), x_of(a_end)
            if len(a.macs) > 1:
                colour, label, cls = RED, "+".join(mac_node.get(m, "?") for m in a.macs), "arp-dual"
            elif not a.node:
                colour, label, cls = NO_REPLY, "no reply", "arp-none"
            elif a.node == "?":
                colour, label, cls = UNKNOWN_MAC, a.mac, "arp-unknown"
            else:
                colour, label, cls = node_colour.get(a.node, UNKNOWN_MAC), a.node, "arp-answer"
            tip = f"{vip}: {', '.join(a.macs) or 'no reply'} ({a.node or '-'}) from {a.t - t0:.3f} s"
            svg.rect(x1, y, x2 - x1, ROW, colour, tip=tip, class_=cls, stroke="#bbb", stroke_width="0.5")
            if x2 - x1 > CHAR_W * len(label) + 4:
                svg.text(x1 + 2, y + 13, label, font_size="10", fill="#000" if colour != RED else "#fff")
        y += ROW + ROW_GAP
    notes = [e for e in events if e.kind == NOTE]
    if notes:
        y += LANE_GAP
        svg.text(8, y + 13, "notes", font_weight="bold")
        for e in notes:
            svg.rect(
                x_of(e.t) - 1.5,
                y + 2,
                3,
                ROW - 4,
                "#444",
                tip=f"{e.t - t0:.3f} s {e.node + ': ' if e.node else ''}{e.detail}",
            )
        y += ROW + ROW_GAP
    lanes_bottom = y

    # Split brain: a red band across the lanes of the nodes that held the VIP together, labelled with its length.
    for vip in vips:
        for p in periods[vip]:
            rows = [vip_row_y[(n, vip)] for n in p.nodes if (n, vip) in vip_row_y]
            if not rows:
                rows = [lanes_top, nodes_bottom - ROW]
            y1, y2 = min(rows) - 2, max(rows) + ROW + 2
            x1, x2 = x_of(p.start), x_of(p.end)
            tip = (
                f"DUAL MASTER {vip} on {', '.join(p.nodes)} from {p.start - t0:.3f} s to {p.end - t0:.3f} s "
                f"({(p.end - p.start) * 1000:.0f} ms)"
            )
            svg.rect(
                x1,
                y1,
                x2 - x1,
                y2 - y1,
                RED,
                tip=tip,
                class_="dual-master",
                fill_opacity="0.35",
                stroke=RED,
                stroke_width="2",
            )
            label = f"DUAL MASTER {vip} {(p.end - p.start) * 1000:.0f} ms"
            if x2 - x1 > CHAR_W * len(label):
                svg.text(
                    x1 + 3, lanes_top - 6, label, fill=RED, font_weight="bold", font_size="10", class_="dual-label"
                )

    # Faults and heals: dashed lines over everything, labels on top.
    for e, row, label in placed:
        colour = FAULT_COLOUR if e.kind == FAULT else HEAL_COLOUR
        x = x_of(e.t)
        ly = 44 + 14 * row
        svg.line(x, ly + 2, x, lanes_bottom, colour, stroke_dasharray="5,3", stroke_width="1.5", class_=e.kind)
        svg.text(x + 3, ly, label, fill=colour, font_size="11", class_=f"{e.kind}-label")

    # Time axis, seconds since t0.
    axis_y = lanes_bottom + 6
    svg.line(LEFT, axis_y, LEFT + plot_w, axis_y, "#000")
    step = _nice_step(span)
    tick = math.ceil(t_min / step) * step
    while tick <= t_max + 1e-9:
        x = x_of(t0 + tick)
        svg.line(x, axis_y, x, axis_y + 5, "#000")
        grid.line(x, lanes_top - 3, x, lanes_bottom, "#e4e4e4", class_="grid")
        svg.text(x, axis_y + 17, f"{tick:g}", text_anchor="middle", font_size="10")
        tick += step
    svg.text(LEFT + plot_w, axis_y + 30, "time since start (s)", text_anchor="end", font_size="10")
    y = axis_y + 48

    # Caption: the checker's figures and what went wrong.
    for vip in vips:
        verdict = verdict_by_vip.get(vip)
        if verdict is None:
            continue
        v = verdict
        svg.text(
            8,
            y,
            f"{vip}: dual master {_fmt_ms(v.dual_master_ms)} · failover {_fmt_ms(v.failover_ms)} · "
            f"ARP flaps {v.arp_flaps} · no master {_fmt_ms(v.no_master_ms)} · "
            f"held at end by {', '.join(v.holders_at_end) or 'nobody'}",
            font_weight="bold",
            class_="caption",
        )
        y += 16
        for violation in v.violations:
            svg.text(20, y, f"✗ {violation}", fill=RED, class_="violation")
            y += 15
        if not v.violations:
            svg.text(20, y, "✓ no violation", fill=HEAL_COLOUR)
            y += 15
        y += 4

    # Legend.
    y += 6
    items: list[tuple[str, str, str]] = [(vip_colour[v], f"{v} held", "") for v in vips]
    items += [(RED, "dual master / two MACs answer", "0.6")]
    items += [(node_colour[n], f"ARP answered by {n}", "") for n in all_nodes]
    items += [(NO_REPLY, "no ARP reply", ""), (UNKNOWN_MAC, "unknown MAC", "")]
    if any(e.kind == VRRP_STATE for e in events):
        items += [(c, f"keepalived {s}", "") for s, c in STATE_COLOURS.items()]
    if any(e.kind in (GATE, DECISION) for e in events):
        items += [(c, f"arbiter gate {g}", "") for g, c in GATE_COLOURS.items()]
    if any(e.kind == FENCE for e in events):
        items += [(FENCE_COLOUR, "fence of this node", "")]
    if any(e.kind == POWER for e in events):
        items += [(POWER_COLOUR, "BMC power change", "")]
    x = 8.0
    for colour, label, opacity in items:
        width = 18 + CHAR_W * len(label) + 14
        if x + width > WIDTH - RIGHT:
            x = 8.0
            y += 18
        extra = {"fill_opacity": opacity} if opacity else {}
        svg.rect(x, y - 10, 12, 12, colour, stroke="#888", stroke_width="0.5", **extra)
        svg.text(x + 16, y, label, font_size="11")
        x += width
    y += 18
    for colour, label in ((FAULT_COLOUR, "fault injected"), (HEAL_COLOUR, "fault healed")):
        svg.line(8, y - 4, 26, y - 4, colour, stroke_dasharray="5,3", stroke_width="1.5")
        svg.text(32, y, label, font_size="11")
        y += 16
    height = y + 8

    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">'
    )
    background = f'<rect x="0" y="0" width="{WIDTH}" height="{height:.0f}" fill="#ffffff"/>'
    heading = f'<text x="8" y="22" font-size="15" font-weight="bold">{escape(title)}</text>'
    return "\n".join([head, background, heading, *back.parts, *grid.parts, *svg.parts, "</svg>", ""])


def _gate_rows(
    svg: _Svg, events: Sequence[Event], node: str, y: int, end_abs: float, t0: float, x_of: Callable[[float], float]
) -> int:
    """The node's arbiter rows: one per instance with its gate (open/closed), then fences and power changes."""
    gates = [e for e in events if e.kind in (GATE, DECISION) and e.node == node and len(e.detail.split()) >= 2]
    for inst in dict.fromkeys(e.detail.split()[0] for e in gates):
        svg.text(LEFT - 8, y + 13, f"arbiter {inst}", text_anchor="end", fill="#555")
        mine = [e for e in gates if e.detail.split()[0] == inst]
        for i, e in enumerate(mine):
            gate = e.detail.split()[1]
            g_end = _until(mine[i + 1].t if i + 1 < len(mine) else end_abs, e.t, events, node)
            x1, x2 = x_of(e.t), x_of(g_end)
            tip = f"{node} {inst} gate {e.detail.split(' ', 1)[1]} from {e.t - t0:.3f} s"
            svg.rect(x1, y + 3, x2 - x1, ROW - 6, GATE_COLOURS.get(gate, OTHER_STATE), tip=tip, class_="gate")
            rule = e.detail.split()[2].rstrip(":") if len(e.detail.split()) > 2 else ""
            label = f"{gate} {rule}".strip()
            if x2 - x1 > CHAR_W * len(label) + 4:
                svg.text(x1 + 2, y + 13, label, font_size="9", fill="#000")
        y += ROW + ROW_GAP
    marks = [e for e in events if e.kind in (FENCE, POWER) and e.node == node]
    if marks:
        svg.text(LEFT - 8, y + 13, "fence / power", text_anchor="end", fill="#555")
        free_from = 0.0  # labels never overlap: one that would is left to the mark's tooltip
        for e in marks:
            colour = FENCE_COLOUR if e.kind == FENCE else POWER_COLOUR
            label = f"fence {e.detail}" if e.kind == FENCE else f"power {e.detail}"
            tip = f"{e.t - t0:.3f} s {node}: {label}"
            svg.rect(x_of(e.t) - 1.5, y + 1, 3, ROW - 2, colour, tip=tip, class_=e.kind)
            short = label.split(" (")[0]
            if x_of(e.t) + 3 >= free_from:
                svg.text(x_of(e.t) + 3, y + 13, short, font_size="9", fill=colour)
                free_from = x_of(e.t) + 3 + CHAR_W * 0.85 * len(short) + 6
        y += ROW + ROW_GAP
    return y


def _until(end: float, start: float, events: Sequence[Event], node: str) -> float:
    """A state drawn from `start` ends at `end`, or earlier when the node's BMC powered it off in between (a
    killed keepalived or agent reports nothing more)."""
    offs = [e.t for e in events if e.kind == POWER and e.node == node and e.detail == "off" and start < e.t < end]
    return min(offs, default=end)
