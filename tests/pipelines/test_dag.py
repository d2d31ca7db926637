"""The DAG picture of big pipelines: fan-outs as a group with its counts, long chains wrapped."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from pipelines import dag, services
from pipelines.spec import PipelineSpec, StepSpec, parse_spec
from pipelines.states import StepState


def fan_out(width: int, name: str = "fan") -> PipelineSpec:
    parts = [f"part-{i:02d}" for i in range(width)]
    steps: list[dict[str, Any]] = [{"name": "start", "type": "noop"}]
    steps += [{"name": p, "type": "noop", "after": ["start"]} for p in parts]
    steps.append({"name": "join", "type": "noop", "after": parts})
    return parse_spec({"name": name, "steps": steps})


def chain(length: int) -> PipelineSpec:
    steps: list[dict[str, Any]] = [{"name": "s00", "type": "noop"}]
    steps += [
        {"name": f"s{i:02d}", "type": "noop", "after": [f"s{i - 1:02d}"]} for i in range(1, length)
    ]
    return parse_spec({"name": "chain", "steps": steps})


def size(svg: str) -> tuple[int, int]:
    found = re.search(r'<svg[^>]* width="(\d+)" height="(\d+)"', svg)
    assert found, svg[:200]
    return int(found[1]), int(found[2])


def fan_states() -> dict[str, StepState]:
    statuses = ["succeeded"] * 12 + ["running"] * 5 + ["queued"] * 3 + ["pending"] * 10
    states = {"start": StepState(1, "succeeded", 1, 1), "join": StepState(2, "pending", 1, 1)}
    for index, status in enumerate(statuses):
        states[f"part-{index:02d}"] = StepState(10 + index, status, 1, 1)
    return states


def test_a_wide_fan_out_is_one_group_box_with_its_counts_and_one_edge_each_way():
    spec = fan_out(30)
    svg = str(dag.render_svg(spec, fan_states(), expand=[]))

    assert svg.count('class="node group') == 1
    assert "30 steps: 12 succeeded, 5 running, 3 queued, 10 pending" in svg
    # Its members are not drawn one by one, and the bundle of 60 edges is two.
    assert 'data-step="part-05"' not in svg
    assert svg.count('class="edge"') == 2
    # The counts as a stacked bar, one segment per state.
    assert re.findall(r'class="bar st-(\w+)"', svg) == ["succeeded", "running", "queued", "pending"]
    # The group is running, so the page can find it to keep it in view.
    assert 'class="node group active"' in svg
    assert size(svg)[1] <= 400


def test_eight_siblings_stay_single_boxes():
    svg = str(dag.render_svg(fan_out(8), expand=[]))
    assert "node group" not in svg
    assert all(f'data-step="part-{i:02d}"' in svg for i in range(8))


def test_a_group_opens_by_its_link_in_a_grid_and_closes_again():
    spec = fan_out(30)
    closed = str(dag.render_svg(spec, fan_states(), expand=[]))
    link = re.search(
        r'<a class="group-toggle" id="toggle-part-00" href="([^"]+)" aria-label="Show the 30 steps',
        closed,
    )
    assert link
    assert link[1] == "?expand=part-00#group-part-00"

    opened = str(dag.render_svg(spec, fan_states(), expand=["part-00"]))
    assert all(f'data-step="part-{i:02d}"' in opened for i in range(30))
    assert 'href="?#group-part-00"' in opened
    assert "Hide the 30 steps" in opened
    # In columns of eight, not one column of thirty; still one edge in and one out.
    assert size(opened)[1] <= 520
    assert opened.count('class="edge"') == 2


def test_the_address_may_name_no_group_and_nothing_of_it_is_echoed():
    svg = str(dag.render_svg(fan_out(30), expand=['"><script>x</script>', "join"]))
    assert "<script>" not in svg
    assert "script" not in svg
    assert 'href="?expand=part-00#group-part-00"' in svg


def test_pages_without_links_keep_groups_closed_but_open_the_highlighted_step():
    spec = fan_out(12)
    plain = str(dag.render_svg(spec))
    assert "<a " not in plain
    assert 'role="img"' in plain
    assert "12 steps: noop" in plain
    task = str(dag.render_svg(spec, fan_states(), highlight="part-07"))
    assert 'class="node st-succeeded current"' in task
    assert 'data-step="part-07"' in task


def test_a_long_chain_wraps_onto_bands_and_keeps_every_step():
    spec = chain(25)
    states = {
        f"s{i:02d}": StepState(i, "succeeded" if i < 20 else "pending", 1, 1) for i in range(25)
    }
    states["s20"] = StepState(20, "running", 1, 1)
    svg = str(dag.render_svg(spec, states, expand=[]))
    width, height = size(svg)
    assert width <= 1300
    assert height <= 600
    assert all(f'data-step="s{i:02d}"' in svg for i in range(25))
    assert svg.count('class="edge"') == 24
    assert 'class="node st-running"' in svg


def test_step_names_are_escaped_in_boxes_groups_and_titles():
    odd = '<img src=x onerror="alert(1)">&'
    steps = [StepSpec("root", "noop")]
    steps += [StepSpec(f"{odd}{i}", "noop", after=("root",)) for i in range(10)]
    spec = PipelineSpec(name='p"<b>', steps=tuple(steps))
    for svg in (
        str(dag.render_svg(spec, expand=[])),
        str(dag.render_svg(spec, expand=[f"{odd}0"])),
    ):
        assert "<img" not in svg
        assert "<b>" not in svg
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in svg


@pytest.mark.parametrize("width", [9, 30, 50])
def test_the_picture_is_deterministic(width):
    spec = fan_out(width)
    assert str(dag.render_svg(spec, fan_states(), expand=[])) == str(
        dag.render_svg(spec, fan_states(), expand=[])
    )


@pytest.mark.django_db
def test_the_pipeline_page_opens_a_group_from_its_address(client, users):
    steps: list[dict[str, Any]] = [{"name": "start", "type": "noop"}]
    steps += [{"name": f"part-{i:02d}", "type": "noop", "after": ["start"]} for i in range(20)]
    services.pipeline_create(member_role="starter", spec={"name": "wide", "steps": steps})
    client.force_login(users["r1"])
    closed = client.get(reverse("pipeline", args=["wide"])).content.decode()
    assert "20 steps: noop" in closed
    assert 'data-step="part-19"' not in closed
    opened = client.get(reverse("pipeline", args=["wide"]) + "?expand=part-00").content.decode()
    assert 'data-step="part-19"' in opened
    # Nonsense in the address is no error: the picture stays as it was.
    odd = client.get(reverse("pipeline", args=["wide"]) + "?expand=%3Cb%3E")
    assert odd.status_code == 200
    assert "&lt;b&gt;" not in odd.content.decode()
