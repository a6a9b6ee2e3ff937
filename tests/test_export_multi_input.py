"""Export of models with several inputs (a keras_hub BertTextClassifier's dict, a list of Inputs): named
``serving_default`` inputs in the SavedModel and the TFLite signature runner, checked against Keras; default
check inputs that reach every embedding row; named refusals (dict keys, sequence length, strings in TFLite)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_selopt.deploy import export
from tf_selopt.deploy.export import export_saved_model, export_tflite
from tf_selopt.keras import inputs as inputs_lib

NAMES = ("token_ids", "segment_ids", "padding_mask")


def tiny_bert_classifier():
    """keras_hub's BertTextClassifier built from config (no preset): vocab 100, 2 layers, hidden 32, seq 16."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=16
    )
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)


def bert_inputs(n=6, length=16, seed=1):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, length + 1, n)
    return {
        "token_ids": rng.integers(0, 100, (n, length)).astype("int32"),
        "segment_ids": (np.arange(length) >= lengths[:, None] // 2).astype("int32"),
        "padding_mask": (np.arange(length) < lengths[:, None]).astype("int32"),
    }


@pytest.fixture(scope="module")
def bert():
    return tiny_bert_classifier()


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, ds, fs in os.walk(root) for f in fs + ds)


@pytest.mark.slow  # Keras' ExportArchive writes the BERT graph twice: ~70 s on the shared 2-core machine
def test_bert_saved_model_and_tflite_serve_the_named_inputs_as_keras_does(bert, tmp_path):
    saved = export_saved_model(bert, tmp_path, "bert", 1)
    assert saved.check_exercised and saved.max_abs_diff <= 1e-5
    assert saved.input_ranges == {
        "token_ids": "ids in [0, 100) (token_embedding.input_dim)",
        "segment_ids": "ids in [0, 2) (segment_embedding.input_dim)",
        "padding_mask": "padding masks: ones then zeros",
    }
    signature = tf.saved_model.load(saved.path).signatures["serving_default"]
    args, kwargs = signature.structured_input_signature
    assert args == () and kwargs == {n: tf.TensorSpec((None, None), tf.int32, name=n) for n in NAMES}
    lite = export_tflite(bert, tmp_path / "bert.tflite", sample_inputs=bert_inputs())
    assert lite.sample_source == "given" and lite.check_exercised
    runner = export.tflite_runtime()[0](model_path=lite.path).get_signature_runner("serving_default")
    assert set(runner.get_input_details()) == set(NAMES)
    for length in (16, 9):  # the sequence dimension stays free
        x = bert_inputs(length=length, seed=2)
        want = bert(x, training=False).numpy()
        got = signature(**{n: tf.constant(v) for n, v in x.items()})["outputs"].numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        np.testing.assert_allclose(runner(**x)["outputs"], want, rtol=0, atol=1e-4)


def test_default_check_ids_cover_each_embedding_vocabulary(bert):
    ranges = inputs_lib.integer_ranges(bert)
    assert {n: r[0] for n, r in ranges.items()} == {"token_ids": 100, "segment_ids": 2}
    assert inputs_lib.max_sequence_length(bert)[0] == 16
    x = export.default_sample_inputs(
        export.serving_input_specs(bert), ranges={n: r[0] for n, r in ranges.items()}, length=16
    )
    assert {n: v.shape for n, v in x.items()} == {n: (8, 16) for n in NAMES}
    assert x["token_ids"].min() >= 0 and x["token_ids"].max() < 100 and len(np.unique(x["token_ids"])) > 50
    assert set(np.unique(x["segment_ids"])) == {0, 1}
    mask = x["padding_mask"]  # each row ones, then zeros
    assert mask[:, 0].all() and (np.diff(mask, axis=1) <= 0).all() and not mask.all()


def test_ids_drawn_over_the_vocabulary_exercise_a_model_that_0_and_1_do_not(tmp_path):
    ids = keras.Input((8,), dtype="int32", name="ids")
    embedding = keras.layers.Embedding(100, 4, name="vocab")
    pooled = keras.layers.GlobalAveragePooling1D()(embedding(ids))
    model = keras.Model({"ids": ids}, keras.layers.Dense(2)(pooled))  # one input, taken as a one-key dict
    table = np.random.default_rng(0).normal(size=(100, 4)).astype("float32")
    table[:2] = 0.0  # ids 0 and 1 read zeros: {0, 1} inputs give one output for every row
    embedding.set_weights([table])
    report = export_tflite(model, tmp_path / "m.tflite")  # served as "inputs", as every one-input model
    assert report.check_exercised and report.input_ranges == {"inputs": "ids in [0, 100) (vocab.input_dim)"}
    assert export.serving_input_spec(model).name == "inputs"


def test_an_integer_input_of_unknown_range_is_reported_and_not_counted_as_exercised(tmp_path):
    counts = keras.Input((4,), dtype="int32", name="counts")
    model = keras.Model(counts, keras.layers.Dense(2)(keras.ops.cast(counts, "float32")))
    with pytest.warns(UserWarning, match=r"range of the integer inputs \['inputs'\] is unknown"):
        report = export_saved_model(model, tmp_path, "m", 1)
    assert not report.check_exercised and report.input_ranges["inputs"].startswith("unknown range")


def test_list_inputs_export_with_the_input_names(tmp_path):
    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=(5, 2)).astype("float32")
    saved = export_saved_model(model, tmp_path, "m", 1, sample_inputs=[xa, xb])
    signature = tf.saved_model.load(saved.path).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"a", "b"}
    np.testing.assert_allclose(signature(a=xa, b=xb)["outputs"], model([xa, xb]), rtol=0, atol=1e-5)
    # Full int8, calibrated on a dict of named inputs, fixed batch of 2.
    lite = export_tflite(
        model, tmp_path / "m.tflite", mode="int8", representative_data={"a": xa, "b": xb}, batch_size=2
    )
    assert lite.check_exercised and lite.sample_source == "given" and lite.batch_size == 2
    runner = export.tflite_runtime()[0](model_path=lite.path).get_signature_runner("serving_default")
    want = model([xa[:2], xb[:2]]).numpy()
    np.testing.assert_allclose(runner(a=xa[:2], b=xb[:2])["outputs"], want, rtol=0, atol=lite.atol)


@pytest.mark.parametrize(
    "sample, word",
    [
        (lambda x: {k: x[k] for k in ("token_ids", "padding_mask")}, r"`sample_inputs`.*keys must be the model's"),
        (lambda x: x | {"mask": x["padding_mask"]}, r"`sample_inputs`.*unknown \['mask'\]"),
        (lambda x: x["token_ids"], r"`sample_inputs`.*pass a dict with the keys \['token_ids', 'segment_ids'"),
        (lambda x: {k: np.tile(v, (1, 2)) for k, v in x.items()}, "sequence length 32, over the model's maximum 16"),
        (lambda x: {k: v[:0] for k, v in x.items()}, "`sample_inputs`: input 'token_ids' must be a non-empty batch"),
    ],
)
@pytest.mark.parametrize("fmt", ["saved_model", "tflite"])
def test_bert_sample_inputs_that_do_not_fit_are_refused_before_writing(bert, tmp_path, sample, word, fmt):
    x = sample(bert_inputs())
    with pytest.raises(ValueError, match=word):
        if fmt == "saved_model":
            export_saved_model(bert, tmp_path, "bert", 1, sample_inputs=x)
        else:
            export_tflite(bert, tmp_path / "bert.tflite", sample_inputs=x)
    assert _files(tmp_path) == []


def test_bert_representative_data_takes_dict_batches_and_checks_them(bert, tmp_path):
    x = bert_inputs()
    with pytest.raises(ValueError, match=r"`representative_data`.*unknown \['mask'\]"):
        export_tflite(bert, tmp_path / "b.tflite", mode="int8", representative_data=[x, x | {"mask": x["token_ids"]}])
    assert _files(tmp_path) == []


def _text_model():
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    vectorize.adapt(["a b c", "b c d", "c d e"])
    text = keras.Input((1,), dtype="string", name="text")
    return keras.Model(text, keras.layers.Dense(2)(keras.ops.cast(vectorize(text), "float32")))


def test_tflite_refuses_string_inputs_and_tokenizer_ops_naming_the_way_out(tmp_path):
    model = _text_model()
    with pytest.raises(ValueError, match=r"model: the inputs \['inputs'\] are strings.*behind its preprocessor"):
        export_tflite(model, tmp_path / "text.tflite")
    assert _files(tmp_path) == []
    # The SavedModel takes strings (TF Serving does); converting it meets the tokenizer's ops.
    saved = export_saved_model(model, tmp_path, "text", 1, sample_inputs=np.array([["a b"], ["c e"]]))
    with pytest.raises(ValueError, match=r"string/tokenizer ops \['tf\.StaticRegexReplace'.*feed token ids"):
        export._convert(saved.path, "float32", None)
