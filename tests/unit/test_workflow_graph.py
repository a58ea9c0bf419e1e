"""The workflow page's graph without a database: layers, order within a layer, edges, SVG."""

from __future__ import annotations

import re

from koyojobs.dashboard.workflow_graph import draw, layers, layout
from koyojobs.dashboard.workflow_page import StepRow


def row(
    id: int, step: str, after: list[str], status: str = "done", always: bool = False
) -> StepRow:
    return StepRow(
        id, step, "tests.job", "q", status, 1, 1, None, None, None, None, None, after, [], always
    )


def test_a_steps_layer_is_one_past_its_deepest_upstream_step() -> None:
    # fetch -> resize-{64,256} -> notify; cleanup waits for fetch and resize-256;
    # audit waits for fetch and notify (a skip edge: its deepest upstream decides).
    after = {
        "fetch": [],
        "resize-64": ["fetch"],
        "resize-256": ["fetch"],
        "notify": ["resize-64", "resize-256"],
        "cleanup": ["fetch", "resize-256"],
        "audit": ["fetch", "notify"],
        "alone": [],
    }
    assert layers(after) == {
        "fetch": 0,
        "resize-64": 1,
        "resize-256": 1,
        "notify": 2,
        "cleanup": 2,
        "audit": 3,
        "alone": 0,
    }


def test_a_long_chain_needs_no_recursion_and_unknown_upstream_steps_are_left_out() -> None:
    chain = {f"s{n}": [f"s{n - 1}"] if n else [] for n in range(5000)}
    assert layers(chain)["s4999"] == 4999
    # The page reads at most its first steps: an upstream step it did not read counts for none.
    assert layers({"b": ["a-not-read"], "c": ["b"]}) == {"b": 0, "c": 1}


def test_a_cycle_which_no_workflow_has_still_gets_a_layer() -> None:
    assert layers({"a": [], "b": ["a", "c"], "c": ["b"]}) == {"a": 0, "b": 1, "c": 1}


def test_layout_columns_order_by_upstream_rows_and_edges_go_upstream_to_dependent() -> None:
    after = {"a": [], "b": [], "c": [], "z": ["c"], "y": ["a"], "x": ["b", "c"]}
    lay = layout(after)
    assert lay.columns == [["a", "b", "c"], ["y", "x", "z"]]
    assert lay.rows == {"a": 0, "b": 1, "c": 2, "y": 0, "x": 1, "z": 2}
    assert lay.edges == [("c", "z"), ("a", "y"), ("b", "x"), ("c", "x")]
    # A shorter column is centred against the tallest one.
    fan_in = layout({"a": [], "b": [], "c": [], "d": [], "report": ["a", "b", "c", "d"]})
    assert fan_in.tallest == 4
    assert fan_in.rows["report"] == 1.5


def test_draw_has_a_box_per_step_and_a_line_per_edge_with_every_label_escaped() -> None:
    steps = [
        row(1, "fetch", []),
        row(2, "<script>alert(1)</script>", ["fetch"], status="running"),
        row(3, "invoice\u202egpj.exe", ["fetch"], status="failed"),
        row(4, "cleanup", ["fetch", "<script>alert(1)</script>"], "pending", always=True),
    ]
    svg = str(draw(steps, "/ops/jobs"))
    assert svg.count("<a class=") == 4
    assert re.findall(r'class="(node [^"]+)"', svg) == [
        "node node-done",
        "node node-running",
        "node node-failed",
        "node node-pending",
    ]
    assert re.findall(r'<path class="(edge[^"]*)"', svg) == [
        "edge",
        "edge",
        "edge always",
        "edge always",
    ]
    assert re.findall(r'href="([^"]+)"', svg) == [f"/ops/jobs/jobs/{n}" for n in (1, 2, 3, 4)]
    assert "<script" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert '<tspan class="hidden-char">\\u202e</tspan>' in svg
    assert "\u202e" not in svg
    # Two boxes never overlap: one per (layer, row).
    spots = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)"', svg)
    assert len(set(spots)) == 4


def test_a_long_name_is_cut_in_its_box_and_whole_in_its_title() -> None:
    name = "resize-the-profile-picture-to-1024"
    svg = str(draw([row(1, name, [])], ""))
    assert "resize-the-profile-pi\u2026</text>" in svg
    assert f"<title>{name}: done</title>" in svg
