"""The inner-optimizer profile registry (``tf_selopt.keras.profiles``): found along a class's MRO, voided by an
overridden ``update_step`` or ``build``, and the one place that says why the selected-only path is not taken."""

import logging

import keras
import numpy as np
import pytest
import tf_keras
from conftest import AdamWithOwnUpdateStep, make_model
from test_selected_only import WARMUP, SubclassedAdam, assert_bit_identical, gradients, masked_run, model_variables
from test_selected_only_fit import EXACT_IN_GRAPH, selective

import tf_selopt
from tf_selopt.core import profiles as core_profiles
from tf_selopt.keras import profiles
from tf_selopt.keras2 import _compat as tf_keras_compat

pytestmark = pytest.mark.usefixtures("fresh_keras_names")


class AdamWithOwnBuild(keras.optimizers.Adam):
    def build(self, variables):
        super().build(variables)


class BelowAnOverride(AdamWithOwnUpdateStep):
    """Keeps its base's ``update_step``, which is not Adam's."""


class TfKerasAdamWithOwnUpdateStep(tf_keras.optimizers.Adam):
    def update_step(self, gradient, variable):
        super().update_step(gradient, variable)


# ------------------------------------------------------------- the MRO rule
def test_a_subclass_takes_its_base_class_profile():
    adam, _ = profiles.profile_of(keras.optimizers.Adam())
    assert profiles.profile_of(SubclassedAdam())[0] is adam
    assert profiles.profile_of(keras.optimizers.AdamW())[0] is adam  # Keras' AdamW keeps Adam's update_step
    assert profiles.why_not(SubclassedAdam()) == ""


@pytest.mark.parametrize(
    "make, reason",
    [
        (AdamWithOwnUpdateStep, "AdamWithOwnUpdateStep overrides update_step (its update or slots may differ from "),
        (AdamWithOwnBuild, "AdamWithOwnBuild overrides build"),
        (BelowAnOverride, "BelowAnOverride overrides update_step (in AdamWithOwnUpdateStep)"),
        (keras.optimizers.Lamb, "Lamb is not one of the profiled optimizers (Adadelta, Adagrad, Adam, "),
    ],
)
def test_an_override_or_no_profiled_base_gives_no_profile_and_says_why(make, reason):
    profile, why = profiles.profile_of(make())
    assert profile is None and why.startswith(reason)
    assert profiles.why_not(make(), exact=False) == why
    assert profiles.motion_slots(make()) is None


def test_the_tf_keras_front_end_shares_the_rule():
    lookup = core_profiles.motion_lookup(tf_keras_compat.PROFILES)
    subclass = type("TfKerasSubclassedAdam", (tf_keras.optimizers.Adam,), {})
    assert (
        lookup(subclass())
        == lookup(tf_keras.optimizers.Adam())
        == tf_keras_compat.MOTION_SLOT_ATTRIBUTES[tf_keras.optimizers.Adam]
    )
    assert lookup(TfKerasAdamWithOwnUpdateStep()) is None
    assert lookup(tf_keras.optimizers.RMSprop(centered=True)) is None  # the row's breaks_motion


# ------------------------------------------------------------- why_not
def constrained_variable():
    variable = keras.Variable(np.ones(3, "float32"), name="c")
    variable.constraint = keras.constraints.NonNeg()
    return variable


@pytest.mark.parametrize(
    "make, variables, reason",
    [
        (lambda: keras.optimizers.Adam(clipnorm=1.0), (), "clipnorm/global_clipnorm: the norm over k entries"),
        (lambda: keras.optimizers.Adam(global_clipnorm=1.0), (), "clipnorm/global_clipnorm: the norm over k entries"),
        (lambda: keras.optimizers.Adam(gradient_accumulation_steps=2), (), "gradient_accumulation_steps is set"),
        (keras.optimizers.Adam, lambda: [constrained_variable()], "variable c has a constraint"),
        (keras.optimizers.Ftrl, (), "Ftrl's pow(accumulator, -lr_power) rounds differently"),
    ],
)
def test_why_not(make, variables, reason):
    assert profiles.why_not(make(), variables() if callable(variables) else variables).startswith(reason)


def test_why_not_where_exactness_or_reselection_is_asked():
    assert "1 ulp" in profiles.why_not(keras.optimizers.Adagrad(), exact=True)
    assert profiles.why_not(keras.optimizers.Adagrad(), exact=False) == ""
    assert "reselect_every with Adam" in profiles.why_not(keras.optimizers.Adam(), reselects=True)
    assert profiles.why_not(keras.optimizers.Lion(), reselects=True) == ""
    assert "reselect_every with Lion" in profiles.why_not(keras.optimizers.Lion(weight_decay=0.1), reselects=True)


# ------------------------------------------------------------- SelectiveOptimizer
def test_a_subclass_that_keeps_update_step_trains_selected_only_bit_for_bit():
    make = lambda: SubclassedAdam(1e-2)  # noqa: E731
    expected, masks, _ = masked_run(make, 10)
    optimizer = tf_selopt.SelectiveOptimizer(make(), keep=0.3, warmup_steps=WARMUP, window=2, seed=0)  # as masked_run
    variables = model_variables()
    for grads in gradients(10):
        optimizer.apply_gradients(zip(grads, variables))
    assert optimizer.update_path == "selected_only" and optimizer.update_path_reason == optimizer.masked_reason == ""
    assert_bit_identical([optimizer.trains(i) for i in range(len(variables))], masks[WARMUP])
    assert_bit_identical(variables, expected)


def test_an_overridden_update_step_runs_masked_and_logs_why_once_at_build(caplog):
    optimizer = selective(lambda: AdamWithOwnUpdateStep(1e-2), warmup_steps=2, window=1)
    variables = make_model("sequential").trainable_variables
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.INFO, logger="tf_selopt"):
        for _ in range(4):
            grads = [keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32")) for v in variables]
            optimizer.apply_gradients(zip(grads, variables))
    assert optimizer.update_path == "masked" and optimizer.restores_frozen
    assert optimizer.update_path_reason.startswith("AdamWithOwnUpdateStep overrides update_step")
    assert optimizer.masked_reason == optimizer.update_path_reason
    records = [r for r in caplog.records if r.name == "tf_selopt"]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert optimizer.update_path_reason in records[0].getMessage()


@pytest.mark.parametrize("update", ["masked", "auto"])
def test_nothing_is_logged_when_the_path_is_the_one_asked_for(update, caplog):
    optimizer = selective(EXACT_IN_GRAPH["adam"], update=update)
    with caplog.at_level(logging.INFO, logger="tf_selopt"):
        optimizer.build(make_model("sequential").trainable_variables)
    assert optimizer.update_path == ("masked" if update == "masked" else "selected_only")
    assert not [r for r in caplog.records if r.name == "tf_selopt"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: keras.optimizers.Ftrl(0.1), "Ftrl's pow(accumulator, -lr_power) rounds differently"),
        (lambda: AdamWithOwnUpdateStep(1e-2), "AdamWithOwnUpdateStep overrides update_step"),
    ],
)
def test_selected_only_where_it_is_not_exact_raises_naming_the_reason(make, message):
    optimizer = selective(make, update="selected_only")
    with pytest.raises(ValueError) as raised:
        optimizer.build(make_model("sequential").trainable_variables)
    assert f"`update`='selected_only' is not exact here: {message}" in str(raised.value)
    assert not optimizer.built and optimizer.update_path_reason is None
