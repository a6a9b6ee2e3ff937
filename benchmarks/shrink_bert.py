"""``tf_selopt.shrink`` on a keras_hub BERT backbone built from config: heads and feed-forward units removed.

Builds ``BertBackbone`` from config (no preset, random weights), zeroes one head and a quarter of the
feed-forward units of every encoder (so that they contribute nothing and score lowest), then
``shrink(backbone, fraction, heads=fraction, scope="per_layer")``. Records the parameter counts, the layer
widths and the largest difference of both outputs (``sequence_output``, ``pooled_output``) against the
zeroed dense backbone on random token ids: it must be float32 rounding only. Accuracy after fine-tuning and
TFLite latency are not measured here.

    python -m benchmarks.shrink_bert --out results/bench_shrink_bert_tiny.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from tf_selopt.keras.shrink import shrink  # noqa: E402


def zero_removable(backbone, fraction, rng):
    """Zero ``round(fraction * heads)`` heads and ``round(fraction * units)`` units of every encoder."""
    for layer in backbone.layers:
        if type(layer).__name__ != "TransformerEncoder":
            continue
        heads, units = layer.num_heads, layer.intermediate_dim
        gone_heads = rng.choice(heads, int(np.floor(fraction * heads + 0.5)), replace=False)
        gone_units = rng.choice(units, int(np.floor(fraction * units + 0.5)), replace=False)
        for variable in layer.weights:
            part, what = variable.path.split("/")[-2:]
            value = variable.numpy()
            if part in ("query", "key", "value"):
                value[..., gone_heads, :] = 0.0
            elif part == "attention_output" and what == "kernel":
                value[gone_heads] = 0.0
            elif part == "feedforward_intermediate_dense":
                value[..., gone_units] = 0.0
            variable.assign(value)


def main(argv=None):
    import keras_hub

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results/bench_shrink_bert_tiny.json"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    keras.utils.set_random_seed(args.seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=args.vocab,
        num_layers=args.layers,
        num_heads=args.heads,
        hidden_dim=args.hidden,
        intermediate_dim=args.intermediate,
        max_sequence_length=args.seq,
    )
    rng = np.random.default_rng(args.seed)
    zero_removable(backbone, args.fraction, rng)
    start = time.perf_counter()
    small = shrink(backbone, args.fraction, heads=args.fraction, scope="per_layer")
    seconds = time.perf_counter() - start
    x = {
        "token_ids": rng.integers(0, args.vocab, (8, args.seq)).astype("int32"),
        "segment_ids": rng.integers(0, 2, (8, args.seq)).astype("int32"),
        "padding_mask": (np.arange(args.seq)[None, :] < rng.integers(args.seq // 2, args.seq + 1, (8, 1))).astype(
            "int32"
        ),
    }
    dense_out, small_out = backbone(x), small(x)
    diffs = {k: float(np.max(np.abs(np.asarray(dense_out[k]) - np.asarray(small_out[k])))) for k in dense_out}
    encoders = [layer for layer in small.layers if "transformer_layer" in layer.name]
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "load_average_before": [round(v, 2) for v in load_before],
        "params_dense": int(backbone.count_params()),
        "params_shrunk": int(small.count_params()),
        "params_shrunk_vs_dense": round(small.count_params() / backbone.count_params(), 4),
        "encoder_params_dense": int(
            sum(layer.count_params() for layer in backbone.layers if "transformer" in layer.name)
        ),
        "encoder_params_shrunk": int(sum(layer.count_params() for layer in encoders)),
        "heads_dense_shrunk": [args.heads, encoders[0].num_heads],
        "units_dense_shrunk": [args.intermediate, encoders[0].intermediate_dim],
        "max_abs_diff_vs_zeroed_dense": diffs,
        "shrink_seconds": round(seconds, 2),
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    print(result, flush=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
