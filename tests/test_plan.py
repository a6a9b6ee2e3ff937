"""The step rules are written once and answer the same for Python ints and int64 tensors: the selection
plan (``tf_selopt.core.plan``) and the pruning schedules' ``prunes_at`` (``tf_selopt.core.schedules``)."""

import inspect
import itertools

import pytest
import tensorflow as tf

from tf_selopt.core.config import ARGUMENTS, FIELDS, SelectionConfig
from tf_selopt.core.plan import SelectionPlan
from tf_selopt.core.schedules import ConstantSparsity, PolynomialDecay, latest_pruning_step

PLANS = [
    SelectionPlan(warmup_steps=w, window=t, reselect_every=n)
    for w, t, n in [(0, 0, None), (5, 0, None), (6, 3, None), (6, 3, 7), (4, 1, 1), (10, 10, 10), (3, 2, 2)]
]


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_plan_answers_the_same_for_ints_and_tensors(plan):
    steps = tf.range(40, dtype=tf.int64)
    tensor = {
        "next_selection": tf.vectorized_map(plan.next_selection, steps).numpy().tolist(),
        "in_window": tf.vectorized_map(plan.in_window, steps).numpy().tolist(),
        "is_selection": tf.vectorized_map(plan.is_selection, steps).numpy().tolist(),
        "restricted": tf.vectorized_map(plan.restricted, steps).numpy().tolist(),
    }
    for name, values in tensor.items():
        assert values == [getattr(plan, name)(s) for s in range(40)], name
    selections = [s for s in range(40) if plan.is_selection(s)]
    assert selections[0] == plan.warmup_steps
    if plan.reselect_every is None:
        assert selections == [plan.warmup_steps]
    else:
        assert all(b - a == plan.reselect_every for a, b in zip(selections, selections[1:]))


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_python_ranges_follow_the_per_step_rule(plan):
    for first, last in itertools.combinations_with_replacement(range(30), 2):
        steps = range(first, last + 1)
        assert plan.meets_window(first, last) == any(plan.in_window(s) for s in steps)
        assert plan.needs_every_variable(first, last) == any(plan.in_window(s) or not plan.restricted(s) for s in steps)
        phase = plan.ordinary_phase(first, last)
        if any(plan.in_window(s) for s in steps) or len({plan.restricted(s) for s in steps}) > 1:
            assert phase is None
        else:
            assert phase == ("restricted" if plan.restricted(first) else "warmup")


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.5, begin_step=3, frequency=4),
        ConstantSparsity(0.5, begin_step=0, end_step=9, frequency=3),
        PolynomialDecay(0.0, 0.8, begin_step=2, end_step=17, frequency=5),
    ],
    ids=repr,
)
def test_pruning_rule_answers_the_same_for_ints_and_tensors(schedule):
    ints = [bool(schedule.prunes_at(s)) for s in range(40)]
    assert ints == [bool(schedule.should_prune(tf.constant(s, tf.int64))) for s in range(40)]
    assert ints == [bool(schedule(s)[0]) for s in range(40)]
    for after, through in itertools.combinations(range(-1, 40), 2):
        pruning = [s for s in range(after + 1, through + 1) if ints[s]]
        assert latest_pruning_step(schedule, after, through) == (pruning[-1] if pruning else None)


def test_both_front_end_signatures_are_the_config_arguments_with_its_defaults():
    """The constructors list exactly ``SelectionConfig``'s arguments, in its order, with its defaults (they pass
    them on by name with ``config_arguments(locals())``), between ``inner`` and ``masks, name, **kwargs``."""
    from tf_selopt.keras.optimizer import SelectiveOptimizer
    from tf_selopt.keras2.optimizer import SelectiveOptimizer as Keras2SelectiveOptimizer

    for cls in (SelectiveOptimizer, Keras2SelectiveOptimizer):
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        names = [p.name for p in parameters]
        assert names == ["inner", *ARGUMENTS, "masks", "name", "kwargs"], cls
        assert {p.name: p.default for p in parameters if p.name in ARGUMENTS} == ARGUMENTS, cls


def test_config_is_frozen_and_rebuilds_from_its_fields():
    config = SelectionConfig(criterion="preconditioned", num_examples=100, keep=0.2, warmup_steps=5, window=2, seed=3)
    with pytest.raises(AttributeError):
        config.keep = 0.5
    names = (
        "criterion",
        "keep",
        "warmup_steps",
        "window",
        "scope",
        "reselect_every",
        "seed",
        "granularity",
        "update",
        "preselected",
    )
    assert FIELDS == names
    again = SelectionConfig(**config.to_dict())
    for field in FIELDS[1:]:
        assert getattr(again, field) == getattr(config, field), field
    assert type(again.criterion) is type(config.criterion)
    assert again.criterion.get_config() == config.criterion.get_config() == {"num_examples": 100, "epsilon": 1e-12}
    assert again.seed == 3
    assert SelectionConfig(criterion="magnitude", warmup_steps=4, seed=0).plan == SelectionPlan(4, 0, None)
    given = SelectionConfig(keep=7, warmup_steps=0, preselected=True, seed=0)
    assert given.plan == SelectionPlan(0, 0, None, preselected=True) and given.window_steps == 0


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(keep=7, warmup_steps=3), "warmup_steps=0"),
        (dict(keep=7, warmup_steps=0, reselect_every=4), "reselect_every=None"),
        (dict(keep=0.5, warmup_steps=0), "int count"),
        (dict(keep=7, warmup_steps=0, preselected="yes"), "preselected"),
    ],
)
def test_a_preselected_config_has_no_warmup_no_reselection_and_a_count(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SelectionConfig(**{"preselected": True, **kwargs})


def test_a_preselected_plan_restricts_every_step_and_never_selects():
    plan = SelectionPlan(0, 0, None, preselected=True)
    assert [plan.next_selection(s) for s in (0, 5)] == [-1, -1]
    assert not plan.meets_window(0, 100) and not plan.needs_every_variable(0, 100)
    assert int(plan.next_selection(tf.constant(3, tf.int64))) == -1 and bool(plan.restricted(tf.constant(0, tf.int64)))
    with pytest.raises(ValueError, match="warmup_steps=0"):
        SelectionPlan(2, 0, None, preselected=True)
