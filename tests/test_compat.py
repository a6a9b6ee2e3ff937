"""The private APIs of Keras, tf_keras, tfmot and TFLite that tf_selopt relies on: still there, still behaving.

One home per library (``tf_selopt/keras/_compat.py``, ``tf_selopt/keras2/_compat.py``,
``tf_selopt/keras2/_tfmot_compat.py``, ``tf_selopt/deploy/_compat.py``); each test
below checks one of its functions against the installed library and fails with
"<library> <version> changed <name>: update <file>". The last tests check that
no other module reaches into a private attribute or an internal module.
"""

import ast
import os
import pathlib
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_selopt
from tf_selopt.core import _compat as core_compat
from tf_selopt.core import profiles as core_profiles
from tf_selopt.deploy import _compat as tflite_compat
from tf_selopt.keras import _compat as keras_compat
from tf_selopt.keras2 import _compat as tf_keras_compat
from tf_selopt.keras2 import _tfmot_compat as tfmot_compat

PACKAGE = pathlib.Path(tf_selopt.__file__).parent
SHAPES = [(2, 3), (4,)]


def _changed(library, name):
    where = {
        "Keras": ("keras", "tf_selopt/keras/_compat.py"),
        "tf_keras": ("tf_keras", "tf_selopt/keras2/_compat.py"),
        "tfmot": ("tensorflow_model_optimization", "tf_selopt/keras2/_tfmot_compat.py"),
        "TensorFlow": ("tensorflow", "tf_selopt/deploy/_compat.py"),
        "TensorFlow (core)": ("tensorflow", "tf_selopt/core/_compat.py"),
    }
    module, path = where[library]
    return f"{library} {sys.modules[module].__version__} changed {name}: update {path}"


def _keras_variables():
    return [keras.Variable(np.ones(s, "float32"), name=f"v{i}") for i, s in enumerate(SHAPES)]


# ---------------------------------------------------------------- Keras 3

#: Options under which each optimizer creates every slot list of its profile, with a slot's initial value not 0.
KERAS_FULL = {
    keras.optimizers.SGD: dict(momentum=0.9),
    keras.optimizers.Adam: dict(amsgrad=True),
    keras.optimizers.AdamW: dict(amsgrad=True),
    keras.optimizers.RMSprop: dict(momentum=0.9, centered=True),
    keras.optimizers.Adagrad: dict(initial_accumulator_value=0.3),
    keras.optimizers.Ftrl: dict(initial_accumulator_value=0.3),
}
#: Every Keras optimizer class with a profile: the registry's rows and the built-in subclasses that take one.
KERAS_PROFILED = sorted(
    (
        cls
        for cls in vars(keras.optimizers).values()
        if isinstance(cls, type) and core_profiles.find(cls, keras_compat.PROFILES)[0] is not None
    ),
    key=lambda c: c.__name__,
)


@pytest.mark.parametrize("cls", KERAS_PROFILED, ids=lambda c: c.__name__)
def test_keras_profile_slots_are_one_variable_per_model_variable_at_their_initial_value(cls):
    variables = _keras_variables()
    optimizer = cls(**KERAS_FULL.get(cls, {}))
    optimizer.build(variables)
    profile, _ = core_profiles.find(cls, keras_compat.PROFILES)
    assert set(profile.motion or ()) <= set(profile.slots)
    for name in profile.slots:
        slots = keras_compat.state(optimizer, name)
        assert isinstance(slots, list) and len(slots) == len(variables), _changed("Keras", f"{cls.__name__}.{name}")
        initial = np.float32(profile.initial_value(optimizer, name))
        for slot, v in zip(slots, variables):
            assert isinstance(slot, keras.Variable) and tuple(slot.shape) == tuple(v.shape), _changed(
                "Keras", f"{cls.__name__}.{name}"
            )
            assert np.all(slot.numpy() == initial), _changed("Keras", f"{cls.__name__}.{name}'s initial value")
    for name in profile.scalars:
        scalar = keras_compat.state(optimizer, name)
        assert isinstance(scalar, keras.Variable) and tuple(scalar.shape) == (), _changed("Keras", name)


def test_keras_slot_attributes_are_the_ones_the_update_reads():
    """Adam's ``_momentums`` is its first moment: after one step it holds (1 - beta_1) * gradient."""
    variables = _keras_variables()
    optimizer = keras.optimizers.Adam(0.1, beta_1=0.9)
    optimizer.build(variables)
    optimizer.apply([tf.ones(s) for s in SHAPES], variables)
    m = keras_compat.state(optimizer, "_momentums")[keras_compat.variable_index(optimizer, variables[1])]
    np.testing.assert_allclose(m.numpy(), np.full(SHAPES[1], 0.1), rtol=1e-6, err_msg=_changed("Keras", "_momentums"))


def test_keras_variable_index_key_and_built_variables():
    a, b = _keras_variables()
    optimizer = keras.optimizers.SGD()
    optimizer.build([a, b])
    indices = [keras_compat.variable_index(optimizer, v) for v in (b, a)]
    assert indices == [1, 0], _changed("Keras", "_get_variable_index")
    keys = [keras_compat.variable_key(optimizer, v) for v in (a, b, a)]
    assert keys[0] == keys[2] != keys[1], _changed("Keras", "_var_key")
    assert [id(v) for v in keras_compat.built_variables(optimizer)] == [id(a), id(b)], _changed(
        "Keras", "_trainable_variables"
    )


def test_keras_moving_averages():
    a, b = _keras_variables()
    optimizer = keras.optimizers.Adam(use_ema=True)
    optimizer.build([a, b])
    averages = keras_compat.moving_averages(optimizer, [b, a])
    assert [tuple(m.shape) for m in averages] == [SHAPES[1], SHAPES[0]], _changed("Keras", keras_compat.EMA_ATTRIBUTE)
    assert keras_compat.moving_averages(keras.optimizers.Adam(), [a]) is None


def test_keras_decays_honours_exclusions():
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    bias = keras.Variable(np.ones((2,), "float32"), name="bias")
    optimizer = keras.optimizers.AdamW(weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.build([kernel, bias])
    assert [keras_compat.decays(optimizer, v) for v in (kernel, bias)] == [True, False], _changed(
        "Keras", "_use_weight_decay"
    )
    assert not keras_compat.decays(keras.optimizers.Adam(), kernel)


def test_keras_check_variables_are_known():
    a, b = _keras_variables()
    optimizer = keras.optimizers.SGD()
    optimizer.build([a])
    keras_compat.check_variables_are_known(optimizer, [a])
    with pytest.raises(ValueError, match="Unknown variable"):
        keras_compat.check_variables_are_known(optimizer, [b])


def test_keras_filter_empty_gradients():
    a, b = _keras_variables()
    optimizer = keras.optimizers.SGD()
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        grads, variables = keras_compat.filter_empty_gradients(optimizer, [None, tf.ones(SHAPES[1])], [a, b])
    assert len(grads) == 1 and [id(v) for v in variables] == [id(b)], _changed("Keras", "_filter_empty_gradients")
    with pytest.raises(ValueError):
        keras_compat.filter_empty_gradients(optimizer, [None], [a])


def test_keras_overwrite_with_gradient():
    a, b = _keras_variables()
    b.overwrite_with_gradient = True
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build([a, b])
    assert [keras_compat.overwrites_with_gradient(optimizer, v) for v in (a, b)] == [False, True], _changed(
        "Keras", "_overwrite_variable_with_gradient"
    )
    grads, variables = keras_compat.overwrite_variables_with_gradients(
        optimizer, [tf.zeros(SHAPES[0]), tf.fill(SHAPES[1], 7.0)], [a, b]
    )
    assert [id(v) for v in variables] == [id(a)] and len(grads) == 1, _changed(
        "Keras", "_overwrite_variables_directly_with_gradients"
    )
    assert np.all(b.numpy() == 7.0) and np.all(a.numpy() == 1.0), _changed(
        "Keras", "_overwrite_variables_directly_with_gradients"
    )


@pytest.mark.parametrize("learning_rate", ["float", "set_float", "set_schedule", "set_callable", "schedule"])
def test_keras_follower_steps_with_its_sources_learning_rate_iterations_and_loss_scale(learning_rate):
    """Two steps of a follower equal, bit for bit, the same two steps of its source, whose learning rate is
    set after the follower is made (or was a schedule from the start) and whose loss scale is set too."""
    initial = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5) if learning_rate == "schedule" else 0.1
    source = keras.optimizers.Adam(initial, beta_1=0.8, amsgrad=True)
    follower = keras_compat.follower(source)
    assert isinstance(follower, keras.optimizers.Adam) and not follower.built
    assert follower.beta_1 == 0.8 and follower.amsgrad
    rate = {
        "set_float": 0.3,
        "set_schedule": keras.optimizers.schedules.ExponentialDecay(0.2, 1, 0.5),
        "set_callable": lambda: 0.25,
    }.get(learning_rate)
    if rate is not None:
        source.learning_rate = rate
    source.loss_scale_factor = 4.0
    a, b = (keras.Variable(np.linspace(-1, 1, 4).astype("float32")) for _ in range(2))
    source.build([a])
    follower.build([b])
    for step in range(2):
        grads = [tf.constant([4.0, -2.0, 1.0, 8.0]) * (step + 1)]
        follower.apply(grads, [b])  # at the source's step count, which only the source advances
        source.apply(grads, [a])
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=_changed("Keras", "Optimizer.apply's reads"))
    assert int(source.iterations) == 2 and follower.iterations is source.iterations


@pytest.mark.parametrize("learning_rate", ["float", "schedule"])
def test_keras_follower_creates_the_variables_of_a_plain_copy(learning_rate):
    initial = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5) if learning_rate == "schedule" else 0.1
    source = keras.optimizers.Adam(initial)
    plain = keras.optimizers.Adam.from_config({**source.get_config(), "learning_rate": initial})
    follower = keras_compat.follower(source)
    variable = keras.Variable(np.ones(3, "float32"))
    for optimizer in (plain, follower):
        optimizer.build([variable])
    layout = [(v.name, tuple(v.shape), v.dtype) for v in plain.variables]
    assert [(v.name, tuple(v.shape), v.dtype) for v in follower.variables] == layout
    assert len(layout) == (3 if learning_rate == "schedule" else 4)  # iteration, [learning_rate,] m, v


def test_core_in_xla_context():
    seen = []

    def probe():
        seen.append(core_compat.in_xla_context())
        return tf.constant(0)

    probe()
    tf.function(probe)()
    tf.function(probe, jit_compile=True)()
    tf.function(lambda: tf.cond(tf.constant(True), probe, probe), jit_compile=True)()
    message = _changed("TensorFlow (core)", "control_flow_util.GraphOrParentsInXlaContext")
    assert seen == [False, False, True, True, True], message


def test_keras_flatten_layers_yields_nested_layers():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="deep")], name="inner")
    x = keras.Input((3,))
    model = keras.Model(x, keras.layers.Dense(1, name="head")(inner(x)), name="outer")
    names = [layer.name for layer in keras_compat.flatten_layers(model)]
    assert names[0] == "outer" and {"inner", "deep", "head"} <= set(names), _changed("Keras", "_flatten_layers")


def test_keras_call_inputs_lists_each_call_of_a_layer():
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    dense = keras.layers.Dense(2)
    add = keras.layers.Add()
    keras.Model([a, b], add([dense(a), dense(b)]))
    calls = keras_compat.call_inputs(dense)
    assert [[t is a for t in c] for c in calls] == [[True], [False]], _changed("Keras", "Layer._inbound_nodes")
    assert calls[1][0] is b and len(keras_compat.call_inputs(add)[0]) == 2, _changed("Keras", "Node.input_tensors")


# ---------------------------------------------------------------- tf_keras

TF_KERAS_FULL = {
    tf_keras.optimizers.SGD: dict(momentum=0.9),
    tf_keras.optimizers.RMSprop: dict(momentum=0.9),
}


def _tf_keras_variables():
    return [tf.Variable(np.ones(s, "float32"), name=f"v{i}") for i, s in enumerate(SHAPES)]


@pytest.mark.parametrize("cls", sorted(tf_keras_compat.PROFILES, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_tf_keras_motion_slots_are_one_variable_per_model_variable(cls):
    variables = _tf_keras_variables()
    optimizer = cls(**TF_KERAS_FULL.get(cls, {}))
    assert not tf_keras_compat.is_built(optimizer)
    optimizer.build(variables)
    assert tf_keras_compat.is_built(optimizer), _changed("tf_keras", "_built")
    for name in tf_keras_compat.PROFILES[cls].motion:
        slots = getattr(optimizer, name, None)
        assert isinstance(slots, list) and len(slots) == len(variables), _changed("tf_keras", f"{cls.__name__}.{name}")
        for slot, v in zip(slots, variables):
            assert tuple(slot.shape) == tuple(v.shape), _changed("tf_keras", f"{cls.__name__}.{name}")


def test_tf_keras_variable_index_and_moving_averages():
    a, b = _tf_keras_variables()
    optimizer = tf_keras.optimizers.Adam(use_ema=True)
    optimizer.build([a, b])
    assert [tf_keras_compat.variable_index(optimizer, v) for v in (b, a)] == [1, 0], _changed(
        "tf_keras", "_index_dict / _var_key"
    )
    averages = tf_keras_compat.moving_averages(optimizer, [b, a])
    assert [tuple(m.shape) for m in averages] == [SHAPES[1], SHAPES[0]], _changed(
        "tf_keras", "_model_variables_moving_average"
    )
    assert tf_keras_compat.moving_averages(tf_keras.optimizers.Adam(), [a]) is None


def test_tf_keras_mark_built_is_what_build_checks():
    """A subclass's ``build`` that marks itself built is not run twice (tf_keras' base ``build`` returns early)."""
    optimizer = tf_keras.optimizers.SGD()
    tf_keras_compat.mark_built(optimizer)
    assert tf_keras_compat.is_built(optimizer)
    optimizer.build(_tf_keras_variables())
    assert not hasattr(optimizer, "_index_dict"), _changed("tf_keras", "_built")


def test_tf_keras_filter_empty_gradients():
    a, b = _tf_keras_variables()
    pairs = tf_keras_compat.filter_empty_gradients([(None, a), (tf.ones(SHAPES[1]), b)])
    assert [id(v) for _, v in pairs] == [id(b)], _changed("tf_keras", "utils.filter_empty_gradients")
    with pytest.raises(ValueError, match="No gradients"):
        tf_keras_compat.filter_empty_gradients([(None, a)])


def test_tf_keras_is_functional():
    x = tf_keras.Input((3,))
    functional = tf_keras.Model(x, tf_keras.layers.Dense(1)(x))
    sequential = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(1)])

    class Subclassed(tf_keras.Model):
        def call(self, x):
            return x

    assert tf_keras_compat.is_functional(functional) and tf_keras_compat.is_functional(sequential), _changed(
        "tf_keras", "_is_graph_network"
    )
    assert not tf_keras_compat.is_functional(Subclassed())


# ---------------------------------------------------------------- tfmot


def test_tfmot_import_leaves_keras_3_and_the_environment():
    assert tfmot_compat.KERAS_COMPAT_MODULE in sys.modules, _changed("tfmot", tfmot_compat.KERAS_COMPAT_MODULE)
    assert tfmot_compat.keras_module() is tf_keras, _changed("tfmot", "core.keras.compat.keras")
    assert tf.keras.__name__.startswith("keras") and os.environ.get("TF_USE_LEGACY_KERAS") in (None, "0", "")


def test_tfmot_registry_weights_are_what_its_wrapper_prunes():
    model = tf_keras.Sequential(
        [
            tf_keras.Input((5, 3)),
            tf_keras.layers.LSTM(4, return_sequences=True, name="lstm"),
            tf_keras.layers.Conv1D(2, 3, name="conv"),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(2, name="dense"),
        ]
    )
    expected = {}
    for name in ("lstm", "conv", "dense"):
        layer = model.get_layer(name)
        assert tfmot_compat.registry_supports(layer), _changed("tfmot", "PruneRegistry.supports")
        expected[name] = [w.ref() for w in tfmot_compat.registry_weights(layer)]
    assert len(expected["lstm"]) == 2, _changed("tfmot", "PruneRegistry._is_rnn_layer / _RNN_CELLS_WEIGHTS_MAP")
    wrapped = tfmot_compat.tfmot.sparsity.keras.prune_low_magnitude(model)
    seen = {}
    for layer in wrapped.layers:
        if tfmot_compat.is_pruning_wrapper(layer):
            pairs = tfmot_compat.wrapper_masks(layer)
            for weight, mask in pairs:
                assert tuple(mask.shape) == tuple(weight.shape) and np.all(mask.numpy() == 1), _changed(
                    "tfmot", "PruneLowMagnitude.pruning_vars"
                )
            if pairs:  # tfmot wraps Flatten too, with nothing to prune
                seen[layer.layer.name] = [w.ref() for w, _ in pairs]
    assert seen == expected, _changed("tfmot", "PruneRegistry._weight_names / PruneLowMagnitude.pruning_vars")
    assert not tfmot_compat.is_pruning_wrapper(model.get_layer("dense"))


# ---------------------------------------------------------------- TFLite


def test_tflite_schema_parses_a_converted_model():
    kernel = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], np.float32)

    @tf.function(input_signature=[tf.TensorSpec((1, 3), tf.float32)])
    def dense(x):
        return tf.matmul(x, tf.constant(kernel))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([dense.get_concrete_function()], dense)
    model = tflite_compat.read_model(converter.convert())
    schema = tflite_compat.schema()
    message = _changed("TensorFlow", "tensorflow.lite.python.schema_py_generated / lite.tools.flatbuffer_utils")
    assert len(model.subgraphs) == 1 and model.subgraphs[0].tensors, message
    found = []
    for t in model.subgraphs[0].tensors:
        data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
        if t.type == schema.TensorType.FLOAT32 and data is not None and len(data):
            found.append(np.frombuffer(bytes(data), np.float32))
    assert any(v.size == kernel.size and sorted(v) == sorted(kernel.ravel()) for v in found), message
    codes = {max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes}
    assert codes & {schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.BATCH_MATMUL}, message
    assert isinstance(schema.BuiltinOperator.DENSIFY, int) and hasattr(model.subgraphs[0].tensors[0], "sparsity")
    assert hasattr(schema.TensorType, "INT8") and hasattr(schema.TensorType, "FLOAT16"), message


# ---------------------------------------------------------------- nowhere else

#: Private attributes of tf_selopt's own objects read across modules (not another library's).
OWN_PRIVATE = {("keras2/tfmot_bridge.py", "_pruning_masks")}
INTERNAL_MODULES = (
    "keras.src",
    "tf_keras.src",
    "tensorflow_model_optimization.python",
    "tensorflow.lite.python",
    "tensorflow.lite.tools",
    "tensorflow.python",
)


def _outside_compat():
    return [p for p in sorted(PACKAGE.rglob("*.py")) if not p.name.startswith(("_compat", "_tfmot_compat"))]


def test_no_private_attribute_outside_the_compat_modules():
    """``x._name`` with ``x`` not ``self``/``cls``, and ``getattr(x, "_name")``, appear only in ``_compat`` modules."""
    found = []
    for path in _outside_compat():
        where = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) not in ("self", "cls"):
                name = node.attr
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr", "setattr"):
                if len(node.args) > 1 and isinstance(getattr(node.args[1], "value", None), str):
                    name = node.args[1].value
            if name and name.startswith("_") and not name.startswith("__") and (where, name) not in OWN_PRIVATE:
                found.append(f"{where}:{node.lineno} {ast.unparse(node)}")
    assert not found, f"private API outside the _compat modules (move it into one): {found}"


def test_no_internal_module_imported_outside_the_compat_modules():
    found = []
    for path in _outside_compat():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            found += [f"{path.relative_to(PACKAGE)}: {n}" for n in names if n.startswith(INTERNAL_MODULES)]
    assert not found, f"internal modules imported outside the _compat modules: {found}"


def _inherited_private(path, library) -> list:
    """``self._name`` in a class deriving from a ``library`` optimizer / callback / layer / constraint, where an
    instance of that base has ``_name``."""
    optimizer = library.optimizers.SGD(momentum=0.9)
    optimizer.build([tf.Variable(np.ones(2, "float32"))])  # built: its build-time attributes count too
    bases = {
        "optimizers": optimizer,
        "callbacks": library.callbacks.Callback(),
        "layers": library.layers.Layer(),
        "constraints": library.constraints.NonNeg(),
    }
    found = []
    for cls in [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]:
        instances = [b for kind, b in bases.items() for base in cls.bases if f".{kind}." in ast.unparse(base)]
        for node in ast.walk(cls):
            if (
                isinstance(node, ast.Attribute)
                and getattr(node.value, "id", None) == "self"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and any(hasattr(b, node.attr) for b in instances)
            ):
                found.append(f"{path.name}:{node.lineno} {cls.name}: self.{node.attr}")
    return found


@pytest.mark.parametrize("layer", ["keras", "keras2"])
def test_no_inherited_private_attribute_outside_the_compat_modules(layer):
    """A subclass of a Keras / tf_keras class (optimizer, callback, layer, constraint) uses no private attribute
    it inherits (``self._variables``, ``self._var_key``, ...): those go through the ``_compat`` module too."""
    library = keras if layer == "keras" else tf_keras
    found = []
    for path in sorted((PACKAGE / layer).glob("*.py")):
        if not path.name.startswith(("_compat", "_tfmot_compat")):
            found += _inherited_private(path, library)
    assert not found, f"inherited private API outside the _compat modules: {found}"


def test_core_return_freed_memory_trims_the_c_heap():
    """glibc (this image's libc) has ``malloc_trim``: the call runs and says so."""
    assert core_compat.return_freed_memory() is True, _changed("TensorFlow (core)", "libc malloc_trim")


def test_core_variables_created_eagerly_spare_the_second_trace():
    """A ``tf.function`` whose first trace creates its variables in ``variables_created_eagerly`` is traced once;
    under a bare ``tf.init_scope()`` TensorFlow records them as the function's and traces it again."""
    for scope, expected in ((core_compat.variables_created_eagerly, 1), (tf.init_scope, 2)):
        traces, holder = [], []

        @tf.function
        def step():
            traces.append(1)
            if not holder:
                with scope():
                    holder.append(tf.Variable(1.0))
            return holder[0].assign_add(1.0)

        assert [float(step()), float(step())] == [2.0, 3.0]
        message = _changed("TensorFlow (core)", "Function._initialize (experimental_enable_variable_lifting)")
        assert len(traces) == expected, message
