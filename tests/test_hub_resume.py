"""``tf_selopt.load_model`` resumes a keras_hub task model and a plain Keras model exactly.

keras_hub's task models compile themselves in ``__init__`` and override ``compile``, so
``keras.saving.load_model`` keeps their constructor's ``Adam(5e-5)`` and skips the saved optimizer.
``tf_selopt.load_model`` compiles from the file and loads the optimizer's state: in a fresh Python process
(``_resume``, run with ``python -c``), two more steps leave every frozen entry bit for bit, and the weights
and optimizer state equal those of the run that went on in the process that saved (``_train``), bit for bit.

The model: a ``BertTextClassifier`` built from config (vocabulary 100, 2 layers, hidden 32, 2 heads,
sequence 16, no dropout; no preset), dict inputs ``token_ids`` / ``padding_mask`` / ``segment_ids``, 4 batches of 8;
``SelectiveOptimizer(Adam(1e-3), keep=0.05, warmup_steps=2, window=1)``: the selection is step 2, the file
is saved after step 4 (selected-only path, warm-up state released), then 2 more steps.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tf_selopt

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, STEPS, MORE = 8, 4, 2


# ------------------------------------------------------- the runs (subprocesses)
def _task():
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=16,
        dropout=0.0,  # dropout's random state is not in a .keras file (Keras): other masks after a resume
    )
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None, dropout=0.0)


def _data(steps, offset=0):
    rng = np.random.default_rng(1)
    n = BATCH * (STEPS + MORE)
    x = {
        "token_ids": rng.integers(0, 100, (n, 16)).astype("int32"),
        "padding_mask": np.ones((n, 16), bool),
        "segment_ids": rng.integers(0, 2, (n, 16)).astype("int32"),
    }
    y = rng.integers(0, 2, n).astype("int32")
    part = slice(BATCH * offset, BATCH * (offset + steps))
    return {k: v[part] for k, v in x.items()}, y[part]


def _fit(model, steps, offset):
    x, y = _data(steps, offset)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)


def _state(model, prefix):
    optimizer = model.optimizer
    out = {f"{prefix}/model/{i}": v.numpy() for i, v in enumerate(model.trainable_variables)}
    out.update({f"{prefix}/opt/{i}": v.numpy() for i, v in enumerate(optimizer.variables)})
    out.update({f"{prefix}/trains/{i}": optimizer.trains(i).numpy() for i in range(len(model.trainable_variables))})
    out[f"{prefix}/optimizer"] = np.array(type(optimizer).__name__)
    return out


def _train(path, out):
    """Fit to step 4 (the selection at step 2), save, then 2 more steps: the uninterrupted reference."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    model = _task()
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-3), keep=0.05, warmup_steps=2, window=1, seed=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    _fit(model, STEPS, 0)
    model.save(path)
    saved = _state(model, "saved")
    _fit(model, MORE, STEPS)
    np.savez(out, **saved, **_state(model, "reference"))


def _resume(path, out):
    """A fresh process: ``tf_selopt.load_model``, then the same 2 steps."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    model = tf_selopt.load_model(path)
    loaded = _state(model, "loaded")
    _fit(model, MORE, STEPS)
    np.savez(out, **loaded, **_state(model, "resumed"))


def _in_fresh_process(function, *args):
    code = f"import sys; sys.path.insert(0, {HERE!r}); import test_hub_resume as t; t.{function}(*{args!r})"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


# ---------------------------------------------------------------- the tests
def _bits(a):
    return np.atleast_1d(a).view(np.uint8)


@pytest.mark.slow  # two Python processes with TensorFlow and keras_hub: ~40 s on a loaded 2-core machine
def test_keras_hub_task_resumes_in_a_fresh_process_bit_for_bit(tmp_path):
    pytest.importorskip("keras_hub")
    path, trained, resumed = (str(tmp_path / name) for name in ("run.keras", "train.npz", "resume.npz"))
    _in_fresh_process("_train", path, trained)
    _in_fresh_process("_resume", path, resumed)
    with np.load(trained) as a, np.load(resumed) as b:
        state = {**dict(a), **dict(b)}
    assert str(state["loaded/optimizer"]) == "SelectiveOptimizer"
    n = sum(1 for k in state if k.startswith("saved/model/"))
    frozen = 0
    for i in range(n):
        trains = state[f"saved/trains/{i}"]
        np.testing.assert_array_equal(state[f"loaded/trains/{i}"], trains)
        before, after = state[f"saved/model/{i}"], state[f"resumed/model/{i}"]
        np.testing.assert_array_equal(_bits(after[~trains]), _bits(before[~trains]), err_msg=f"variable {i}")
        frozen += int((~trains).sum())
    assert frozen > 0.9 * sum(state[f"saved/model/{i}"].size for i in range(n))  # keep=0.05
    for key in [k for k in state if k.startswith("saved/")]:  # the file held everything
        np.testing.assert_array_equal(_bits(state[key.replace("saved/", "loaded/", 1)]), _bits(state[key]), key)
    for key in [k for k in state if k.startswith("reference/")]:  # as if never interrupted
        np.testing.assert_array_equal(_bits(state[key.replace("reference/", "resumed/", 1)]), _bits(state[key]), key)


def _plain_run(tmp_path):
    """A pruned Sequential model trained past its selection by SelectiveOptimizer(Adam), saved as .keras."""
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(3, name="b")])
    masks = tf_selopt.prune(model, 0.5)
    optimizer = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), keep=10, warmup_steps=2, window=1, seed=0)
    model.compile(optimizer=optimizer, loss="mse")
    x, y = np.random.default_rng(0).normal(size=(2, 32, 6)).astype("float32"), np.ones((32, 3), "float32")
    model.fit(x[0], y, batch_size=8, verbose=0, shuffle=False)
    path = str(tmp_path / "plain.keras")
    model.save(path)
    return model, masks, path, (x[1], y)


def test_plain_keras_model_round_trip_restores_optimizer_and_pruning_masks(tmp_path):
    from tf_selopt.keras.pruning import pruning_mask

    model, masks, path, (x, y) = _plain_run(tmp_path)
    loaded = tf_selopt.load_model(path)
    assert type(loaded.optimizer).__name__ == "SelectiveOptimizer"
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(_bits(b.numpy()), _bits(a.numpy()), a.path)
    for layer in ("a", "b"):  # pruning masks back on the zeros, as saved
        kernel = loaded.get_layer(layer).kernel
        np.testing.assert_array_equal(pruning_mask(kernel).numpy(), masks[model.get_layer(layer).kernel.path])
    optimizer = loaded.optimizer
    before = [v.numpy() for v in optimizer.model_variables]
    trains = [optimizer.trains(i).numpy() for i in range(len(before))]
    loaded.fit(x, y, batch_size=16, verbose=0)  # 2 more steps
    for b, v, t in zip(before, optimizer.model_variables, trains):  # frozen and pruned entries: bit for bit
        np.testing.assert_array_equal(_bits(v.numpy()[~t]), _bits(b[~t]))
    assert int(optimizer.selected_count) == 10 and int(optimizer.iterations) == 6


def test_an_optimizer_state_that_does_not_load_warns_naming_tf_selopt_load_model(tmp_path):
    """The way a keras_hub task resumes without tf_selopt.load_model: a new, unbuilt SelectiveOptimizer, then
    load_weights. Keras would skip the saved state with a generic warning; this one names the fix."""
    _, _, path, _ = _plain_run(tmp_path)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(3, name="b")])
    model.compile(optimizer=tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-2), keep=10), loss="mse")
    with pytest.warns(UserWarning, match=r"not loaded: it is not built.*tf_selopt.load_model\(path\)"):
        model.load_weights(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"path": "run.h5"}, "`path` must be the path of a `.keras` file"),
        ({"path": "missing.keras"}, "`path`: no file at"),
        ({"custom_objects": ["x"]}, "`custom_objects` must be None or a dict"),
        ({"compile": "yes"}, "`compile` must be True or False"),
        ({"mask_zeros": "zeros"}, "`mask_zeros` must be one of"),
    ],
)
def test_load_model_bad_arguments(tmp_path, kwargs, message):
    path = tmp_path / "run.keras"
    path.write_bytes(b"")
    kwargs = {"path": str(path), **kwargs}
    if kwargs["path"] in ("run.h5", "missing.keras"):
        kwargs["path"] = str(tmp_path / kwargs["path"])
    with pytest.raises(ValueError, match=message):
        tf_selopt.load_model(**kwargs)


def test_docstring_examples_run(request):
    from conftest import docstring_examples

    from tf_selopt.keras import saving

    attempted, failed = docstring_examples(saving, request)  # or the doctest items of `make test`
    assert attempted > 0 and failed == 0


def test_load_model_raises_when_the_optimizer_state_does_not_match_the_file(tmp_path):
    """An optimizer with other variables (the masked path, which keeps Adam's N-sized state, for a file saved on
    the selected-only path): a ValueError, not a run that starts over."""

    class MaskedSelective(tf_selopt.SelectiveOptimizer):
        def __init__(self, inner, **config):
            super().__init__(inner, **{**config, "update": "masked"})

    _, _, path, _ = _plain_run(tmp_path)
    scope = keras.saving.custom_object_scope({"tf_selopt>SelectiveOptimizer": MaskedSelective})  # over the registry
    with scope, pytest.raises(ValueError, match="the optimizer's state does not load"):
        tf_selopt.load_model(path)
