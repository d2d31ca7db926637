"""The pure scheduler: plans, skips, outcomes and roll back sets."""

from typing import Any

from pipelines import engine
from pipelines.spec import PipelineSpec, parse_spec
from pipelines.states import (
    CANCELLED,
    FAILED,
    PENDING,
    QUEUED,
    REJECTED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    WAITING,
    StepState,
    latest,
)


def step(name: str, *after: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "noop", "after": list(after), **fields}


def build(*steps: dict[str, Any]) -> PipelineSpec:
    return parse_spec({"name": "test-pipeline", "steps": list(steps)})


def states(spec: PipelineSpec, **statuses: str) -> dict[str, StepState]:
    """Every step of `spec` at generation 1, attempt 1; pending unless named."""
    return {
        name: StepState(id=i, status=statuses.get(name, PENDING), generation=1, attempt=1)
        for i, name in enumerate(spec.order, start=1)
    }


def linear() -> PipelineSpec:
    return build(step("a"), step("b", "a"), step("c", "b"))


def diamond(**join_fields: Any) -> PipelineSpec:
    return build(
        step("start"),
        step("left", "start"),
        step("right", "start"),
        step("join", "left", "right", **join_fields),
    )


def test_linear_plan_runs_one_step_at_a_time():
    spec = linear()

    assert engine.plan(spec, states(spec), {}).run == ["a"]
    assert engine.plan(spec, states(spec, a=RUNNING), {}).run == []
    assert engine.plan(spec, states(spec, a=SUCCEEDED), {}).run == ["b"]
    assert engine.plan(spec, states(spec, a=SUCCEEDED, b=SUCCEEDED), {}).run == ["c"]
    assert engine.plan(spec, states(spec, a=SUCCEEDED, b=SUCCEEDED, c=SUCCEEDED), {}).run == []


def test_diamond_runs_branches_in_parallel_and_join_waits_for_both():
    spec = diamond()

    assert sorted(engine.plan(spec, states(spec, start=SUCCEEDED), {}).run) == ["left", "right"]
    half = states(spec, start=SUCCEEDED, left=SUCCEEDED, right=RUNNING)
    assert engine.plan(spec, half, {}).run == []
    done = states(spec, start=SUCCEEDED, left=SUCCEEDED, right=SUCCEEDED)
    assert engine.plan(spec, done, {}).run == ["join"]


def test_a_failed_upstream_step_holds_its_successor_back():
    spec = linear()

    result = engine.plan(spec, states(spec, a=FAILED), {})

    assert result.run == []
    assert result.skip == {}


def test_false_when_skips_with_the_reason():
    spec = build(
        step("choose"),
        step("deploy", "choose", when={"step": "choose", "path": "env", "equals": "prod"}),
    )
    done = states(spec, choose=SUCCEEDED)

    skipped = engine.plan(spec, done, {"choose": {"env": "dev"}})
    ran = engine.plan(spec, done, {"choose": {"env": "prod"}})

    assert skipped.run == []
    assert skipped.skip == {"deploy": 'condition not met: choose.env equals "prod"'}
    assert ran.run == ["deploy"]
    assert ran.skip == {}


def test_skip_cascades_down_a_branch_not_taken():
    spec = build(
        step("choose"),
        step("deploy", "choose", when={"step": "choose", "path": "go", "equals": True}),
        step("notify", "deploy"),
        step("cleanup", "notify"),
    )

    result = engine.plan(spec, states(spec, choose=SUCCEEDED), {"choose": {"go": False}})

    assert result.run == []
    assert set(result.skip) == {"deploy", "notify", "cleanup"}
    assert result.skip["notify"] == "every upstream step was skipped"


def test_join_runs_when_one_branch_ran_and_the_other_was_skipped():
    spec = diamond()

    result = engine.plan(spec, states(spec, start=SUCCEEDED, left=SKIPPED, right=SUCCEEDED), {})

    assert result.run == ["join"]
    assert result.skip == {}


def test_join_is_skipped_when_every_branch_was_skipped():
    spec = diamond()

    result = engine.plan(spec, states(spec, start=SUCCEEDED, left=SKIPPED, right=SKIPPED), {})

    assert result.skip == {"join": "every upstream step was skipped"}


def test_on_failure_continue_lets_successors_run():
    spec = build(step("a", on_failure="continue"), step("b", "a"))

    assert engine.plan(spec, states(spec, a=FAILED), {}).run == ["b"]


def test_on_failure_skip_downstream_blocks_every_pending_descendant():
    spec = build(
        step("a"),
        step("flaky", "a", on_failure="skip_downstream"),
        step("after_flaky", "flaky"),
        step("last", "after_flaky"),
        step("other", "a"),
    )
    now = states(spec, a=SUCCEEDED, flaky=FAILED, other=RUNNING)

    blocked = engine.blocked_by_failure(spec, now)

    assert blocked == {
        "after_flaky": "upstream step 'flaky' failed",
        "last": "upstream step 'flaky' failed",
    }
    assert engine.plan(spec, now, {}).run == []


def test_fail_run_failure_blocks_nothing():
    spec = linear()

    assert engine.blocked_by_failure(spec, states(spec, a=FAILED)) == {}


def test_outcome_is_none_while_anything_is_active():
    spec = linear()

    for active in (QUEUED, RUNNING, WAITING):
        assert engine.outcome(spec, states(spec, a=SUCCEEDED, b=active)) is None


def test_outcome_is_none_while_steps_are_pending():
    spec = linear()

    assert engine.outcome(spec, states(spec)) is None
    assert engine.outcome(spec, states(spec, a=SUCCEEDED)) is None


def test_outcome_succeeded_when_everything_finished():
    spec = diamond()

    finished = states(spec, start=SUCCEEDED, left=SKIPPED, right=SUCCEEDED, join=SUCCEEDED)
    assert engine.outcome(spec, finished) == SUCCEEDED


def test_outcome_failed():
    spec = linear()

    assert engine.outcome(spec, states(spec, a=SUCCEEDED, b=FAILED)) == FAILED


def test_outcome_ignores_a_failure_marked_continue():
    spec = build(step("a", on_failure="continue"), step("b", "a"))

    assert engine.outcome(spec, states(spec, a=FAILED, b=SUCCEEDED)) == SUCCEEDED


def test_outcome_rejected_wins_over_failed():
    spec = diamond()

    now = states(spec, start=SUCCEEDED, left=REJECTED, right=FAILED, join=SKIPPED)
    assert engine.outcome(spec, now) == REJECTED


def test_outcome_cancelled():
    spec = linear()

    assert engine.outcome(spec, states(spec, a=SUCCEEDED, b=CANCELLED, c=CANCELLED)) == CANCELLED


def test_rollback_set_is_the_step_and_everything_below_it():
    spec = diamond()

    assert engine.rollback_set(spec, "left") == {"left", "join"}
    assert engine.rollback_set(spec, "start") == {"start", "left", "right", "join"}


def test_resume_set_reruns_failed_and_cancelled_steps_and_what_they_held_back():
    spec = build(
        step("a"),
        step("b", "a", on_failure="skip_downstream"),
        step("c", "b"),
        step("d", "a"),
        step("e", "d"),
    )
    now = states(spec, a=SUCCEEDED, b=FAILED, c=SKIPPED, d=CANCELLED, e=PENDING)

    assert engine.resume_set(spec, now) == {"b", "c", "d"}


def test_resume_set_keeps_skips_that_no_failure_caused():
    spec = diamond()
    now = states(spec, start=SUCCEEDED, left=SKIPPED, right=FAILED)

    assert engine.resume_set(spec, now) == {"right"}


def test_rollback_targets_are_completed_upstream_steps_in_order():
    spec = build(step("a"), step("b", "a"), step("c", "b"), step("d", "c"), step("x"))
    now = states(spec, a=SUCCEEDED, b=SUCCEEDED, c=SKIPPED, x=SUCCEEDED, d=WAITING)

    assert engine.rollback_targets(spec, "d", now) == ["a", "b"]


def test_latest_picks_the_highest_generation_then_attempt():
    rows = [
        ("a", StepState(1, FAILED, 1, 1)),
        ("a", StepState(3, SUCCEEDED, 2, 1)),
        ("a", StepState(2, FAILED, 1, 2)),
        ("b", StepState(4, FAILED, 1, 1)),
        ("b", StepState(5, QUEUED, 1, 2)),
    ]

    current = latest(rows)

    assert current == {"a": StepState(3, SUCCEEDED, 2, 1), "b": StepState(5, QUEUED, 1, 2)}
