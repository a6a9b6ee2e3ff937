"""Transfer benchmark: sparse fine-tuning selected before the first update vs full, last-layer and Keras LoRA.

The set-up (``selopt finetune`` runs it):

* **Data**: the bundled MNIST subset (``tf_selopt.study.data.load("mnist")``, no download). Each model
  is pretrained once (fixed seed 0) on the digits 0-4 of the training split and its weights are
  cached in ``OUT/pretrained/``. Fine-tuning uses the digits 5-9, relabelled 0-4, with ``sizes``
  labelled training examples (stratified, drawn per seed); the learning rate is chosen on the 5-9
  images of the validation split, accuracy is measured on the 5-9 images of the test split.
* **Head**: the pretrained 5-way head is kept (5-9 relabelled 0-4), so every arm starts from the same
  network and P counts exactly what trains; no arm gets a new, randomly initialised layer.
* **Arms**, all with ``keras.optimizers.Adam`` and the same number of steps (``steps`` batches of
  ``batch_size``): ``full`` (every parameter, N); ``last_layer`` (the head's kernel and bias);
  ``lora_r<r>`` (``layer.enable_lora(r)`` on every Dense/Conv2D layer; the biases stay trainable, as
  Keras leaves them; P = its trainable count); ``<criterion>`` for each of ``criteria``: masks from
  ``tf_selopt.calibrate`` at keep = P (preconditioned with ``num_examples`` = the fine-tuning set
  size), trained by ``SelectiveOptimizer(Adam, masks=masks)`` from step 0; and ``<criterion>@0.5%``
  (``small_keep``) for ``small_criteria``.
* **Learning rate per family** (full, last_layer, lora, ours): the best validation accuracy over
  ``learning_rates`` with seed 0, per model, at ``tune_at`` examples (None: per data size); the
  "ours" family is tuned with its first criterion at keep = P and the rate is used for every
  criterion and budget of ours.
* **Measures per arm**: test accuracy (``seeds`` seeds); optimizer bytes (the optimizer's variables
  after training, bytes summed); step time (median over timed ``train_on_batch`` steps, every arm of a
  model in one process, interleaved round by round); peak RSS: each arm once more, at the largest
  data size and seed 0, in a **fresh subprocess** (a peak in one process is monotone, so arms run one
  after another in one process could not be told apart), for full, LoRA and the gradient criteria at
  keep = P (the arms the goals compare): the whole process's peak (``VmHWM``: import, data,
  calibration, fit; not ``ru_maxrss``, which Linux carries over from the parent process) and the
  arm's own growth: the highest VmRSS sampled every 2 ms while the arm (model build, calibration,
  fit) runs, minus VmRSS when it starts.

Outputs in ``OUT``: ``finetune.json``, ``finetune.md`` (tables and goals), ``finetune.png``
(test accuracy vs trainable parameters, one line per method), and ``tensorboard/<run name>/`` for the first
seed of every size (``run_name``, e.g. ``lora_r4-n50-s0_lenet``): ``epoch_loss``, ``train/loss`` per optimizer
step, the validation accuracy and ``test/accuracy``; those runs carry the two callbacks in ``fit_seconds``.

Examples:
    >>> from tf_selopt.study.finetune import FinetuneConfig, arms
    >>> [a.name for a in arms(FinetuneConfig(criteria=("fisher", "random"), small_criteria=("fisher",)))]
    ['full', 'last_layer', 'lora_r4', 'fisher', 'random', 'fisher@0.5%']
    >>> FinetuneConfig.quick().sizes, [a.name for a in arms(FinetuneConfig.quick())][3:]
    ((50,), ['fisher', 'preconditioned', 'fisher@0.5%'])
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

__all__ = ["FinetuneConfig", "Arm", "arms", "run_finetune", "build_arm", "GRADIENT_CRITERIA"]

GRADIENT_CRITERIA = ("fisher", "gradient_sum", "preconditioned")
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
TRANSFER_CLASSES = (5, 6, 7, 8, 9)
MIB = 2**20


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """Every knob of the benchmark (``quick()`` is the test-sized one)."""

    models: tuple = ("small_cnn", "lenet_300_100")
    sizes: tuple = (50, 200, 1000)
    seeds: tuple = (0, 1, 2)
    steps: int = 80
    batch_size: int = 32
    pretrain_epochs: int = 5
    lora_rank: int = 4
    criteria: tuple = ("fisher", "gradient_sum", "preconditioned", "magnitude", "random")
    small_keep: float = 0.005
    small_criteria: tuple = ("fisher",)
    calibrate_steps: int = 8
    steps_per_execution: int = 10  # fit's steps per call of the compiled train function (less Python per step)
    learning_rates: tuple = (1e-3, 3e-3, 1e-2)
    tune_at: int | None = 200  # the data size the learning rates are chosen at (None: at every size)
    timing_rounds: int = 5
    timing_steps: int = 10
    rss: str = "subprocess"  # "subprocess" (one fresh process per arm) or "none"

    @classmethod
    def quick(cls) -> FinetuneConfig:
        """One model, size and seed, two criteria, a few steps, one learning rate, no RSS subprocesses."""
        return cls(
            models=("lenet_300_100",),
            sizes=(50,),
            seeds=(0,),
            steps=5,
            pretrain_epochs=1,
            criteria=("fisher", "preconditioned"),
            calibrate_steps=2,
            learning_rates=(1e-3,),
            timing_rounds=1,
            timing_steps=2,
            rss="none",
            steps_per_execution=1,
        )


@dataclasses.dataclass(frozen=True)
class Arm:
    """One way to fine-tune: ``family`` in full / last_layer / lora / ours; ``keep`` None means P."""

    name: str
    family: str
    criterion: str | None = None
    keep: float | None = None


def arms(config: FinetuneConfig) -> list[Arm]:
    """The arms of ``config`` in report order."""
    out = [Arm("full", "full"), Arm("last_layer", "last_layer"), Arm(f"lora_r{config.lora_rank}", "lora")]
    out += [Arm(c, "ours", c) for c in config.criteria]
    out += [Arm(f"{c}@{100 * config.small_keep:g}%", "ours", c, config.small_keep) for c in config.small_criteria]
    return out


# ---------------------------------------------------------------------------------------------- data, models
def _builder(name):
    from tf_selopt.study import models

    return {"small_cnn": models.small_cnn, "lenet_300_100": models.lenet_300_100}[name]


def _classes(x, y, classes):
    keep = np.isin(y, classes)
    return x[keep], (y[keep] - classes[0]).astype(np.int32)


def transfer_data():
    """{"pretrain": (x, y), "pretrain_test", "pool", "val", "test"}: digits 0-4 / 5-9 (relabelled 0-4)."""
    from tf_selopt.study import data

    s = data.load("mnist")
    return {
        "pretrain": _classes(s.x_train, s.y_train, PRETRAIN_CLASSES),
        "pretrain_test": _classes(s.x_test, s.y_test, PRETRAIN_CLASSES),
        "pool": _classes(s.x_train, s.y_train, TRANSFER_CLASSES),
        "val": _classes(s.x_val, s.y_val, TRANSFER_CLASSES),
        "test": _classes(s.x_test, s.y_test, TRANSFER_CLASSES),
    }


def subset(pool, n, seed):
    """``n`` examples of ``pool`` (x, y), as equal per class as ``n`` allows, drawn with ``seed``."""
    x, y = pool
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), p, replace=False) for c, p in zip(classes, per)])
    idx = rng.permutation(idx)
    return x[idx], y[idx]


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def pretrain(model_name, data, out_dir, epochs, quiet=True) -> tuple[pathlib.Path, dict]:
    """Weights of ``model_name`` trained on digits 0-4 (seed 0), cached as OUT/pretrained/<model>.weights.h5."""
    import keras

    path = pathlib.Path(out_dir) / "pretrained" / f"{model_name}.weights.h5"
    info_path = path.with_suffix("").with_suffix(".json")
    if path.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("epochs") == epochs:
            return path, info
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    model = _builder(model_name)(num_classes=len(PRETRAIN_CLASSES))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_loss(), metrics=["accuracy"])
    x, y = data["pretrain"]
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0 if quiet else 2)
    acc = _accuracy(model, *data["pretrain_test"])
    model.save_weights(path)
    info = {
        "epochs": epochs,
        "examples": len(y),
        "test_accuracy_digits_0_4": acc,
        "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
    }
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    return path, info


def _count(variables) -> int:
    return int(sum(int(np.prod(v.shape)) for v in variables))


def _accuracy(model, x, y) -> float:
    logits = np.asarray(model(x, training=False))
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def lora_count(model_name, weights, rank) -> int:
    """P: the trainable parameters of the model with ``enable_lora(rank)`` on every Dense/Conv2D layer."""
    model, _ = _base(model_name, weights)
    _enable_lora(model, rank)
    return _count(model.trainable_variables)


def _base(model_name, weights):
    model = _builder(model_name)(num_classes=len(TRANSFER_CLASSES))
    model.load_weights(weights)
    return model, _count(model.trainable_variables)


def _enable_lora(model, rank):
    import keras

    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            layer.enable_lora(rank)


def build_arm(model_name, weights, arm, x, y, *, lr, seed, P, config):
    """A compiled model and optimizer for ``arm``, from the pretrained ``weights``; and an info dict
    (``trainable``: parameters that train; ours: ``keep``, ``calibrate_seconds``)."""
    import keras

    import tf_selopt

    keras.utils.set_random_seed(seed)
    model, n_all = _base(model_name, weights)
    info = {}
    if arm.family == "last_layer":
        for layer in model.layers[:-1]:
            layer.trainable = False
    elif arm.family == "lora":
        _enable_lora(model, config.lora_rank)
    inner = keras.optimizers.Adam(lr)
    if arm.family == "ours":
        k = P if arm.keep is None else max(1, round(arm.keep * n_all))
        start = time.perf_counter()
        masks = tf_selopt.calibrate(
            model,
            (x, y),
            loss=_loss(),
            criterion=arm.criterion,
            keep=int(k),
            steps=config.calibrate_steps,
            num_examples=len(y),
            seed=seed,
            batch_size=config.batch_size,
        )
        info["calibrate_seconds"] = time.perf_counter() - start
        info["keep"] = int(k)
        info["mask_true"] = int(sum(int(np.sum(m)) for m in masks))
        optimizer = tf_selopt.SelectiveOptimizer(inner, masks=masks)
        info["trainable"] = int(k)
    else:
        optimizer = inner
        info["trainable"] = _count(model.trainable_variables)
    model.compile(optimizer=optimizer, loss=_loss(), steps_per_execution=config.steps_per_execution)
    return model, optimizer, info


def _dataset(x, y, seed, batch_size):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=seed).repeat().batch(batch_size)


def _optimizer_bytes(optimizer) -> tuple[int, int]:
    """(bytes of all the optimizer's variables, of its bool ones: SelectiveOptimizer's masks)."""
    sizes = [(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize, v.dtype == "bool") for v in optimizer.variables]
    return sum(b for b, _ in sizes), sum(b for b, is_bool in sizes if is_bool)


def run_name(model_name, size, seed, arm) -> str:
    """TensorBoard run name, the parts that differ first and each delimited (as ``RunSpec.run_name``):
    ``run_name("lenet_300_100", 50, 0, arm)`` is ``lora_r4-n50-s0_lenet`` for ``arm.name == "lora_r4"``."""
    return f"{arm.name}-n{size}-s{seed}_{model_name.split('_')[0]}"


def train_arm(model_name, weights, arm, x, y, *, lr, seed, P, config, log_dir=None, val=None):
    """Build, fine-tune for ``config.steps`` steps; return (model, optimizer, info).

    With ``log_dir``: Keras' ``TensorBoard`` (``epoch_*`` tags, no graph) and ``StepLoss`` (``train/loss`` per
    optimizer step) during ``fit``; after it (outside ``fit_seconds``) the accuracy on ``val`` (x, y) as
    ``epoch_accuracy`` in ``log_dir/validation`` at the epoch's step 0, where Keras writes its own."""
    import keras

    from tf_selopt.keras.callbacks import StepLoss

    model, optimizer, info = build_arm(model_name, weights, arm, x, y, lr=lr, seed=seed, P=P, config=config)
    callbacks = [] if log_dir is None else [keras.callbacks.TensorBoard(log_dir, write_graph=False), StepLoss(log_dir)]
    start = time.perf_counter()
    model.fit(
        _dataset(x, y, seed, config.batch_size),
        steps_per_epoch=config.steps,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=callbacks,
    )
    info["fit_seconds"] = time.perf_counter() - start
    if log_dir is not None and val is not None:
        from tf_selopt.study.runs import write_scalars

        write_scalars(pathlib.Path(log_dir) / "validation", 0, {"epoch_accuracy": _accuracy(model, *val)})
    info["optimizer_bytes"], info["optimizer_mask_bytes"] = _optimizer_bytes(optimizer)
    if arm.family == "ours":
        info["selected_count"] = int(optimizer.selected_count)
        info["update_path"] = optimizer.update_path
    return model, optimizer, info


# ------------------------------------------------------------------------------------------------- measures
def _rss_now(field="VmRSS") -> int:
    """This process's ``VmRSS`` (or ``VmHWM``, its peak) from ``/proc/self/status``, in bytes (Linux)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _rss_child(spec_json: str) -> None:
    """Entry point of a fresh process: run one arm as ``train_arm`` does, print its RSS as JSON."""
    import threading

    spec = json.loads(spec_json)
    config = FinetuneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()})
    with np.load(spec["data"]) as arrays:
        x, y = arrays["x"], arrays["y"]
    arm = Arm(**spec["arm"])
    import keras  # noqa: F401  (everything imported before the start measure)

    import tf_selopt

    tf_selopt.SelectiveOptimizer  # noqa: B018  (the lazy package loads its modules on first use)
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(_rss_now())
            done.wait(0.002)

    start = _rss_now()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        train_arm(spec["model"], spec["weights"], arm, x, y, lr=spec["lr"], seed=0, P=spec["P"], config=config)
    finally:
        done.set()
        sampler.join()
    end = _rss_now()
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a large
    # parent reports the parent's peak (every arm read the same 1,951 MiB in a first run)
    peak = max(_rss_now("VmHWM"), end, *samples)
    print(json.dumps({"rss_start_bytes": start, "arm_peak_rss_bytes": max(end, *samples), "peak_rss_bytes": peak}))


def measure_rss(model_name, weights, arm, data_path, lr, P, config) -> dict:
    """Peak RSS of one arm (``train_arm`` on the (x, y) of the ``.npz`` file ``data_path``, seed 0) in a fresh
    Python process, which loads no data set package (the arrays come from the file)."""
    spec = {
        "model": model_name,
        "weights": str(weights),
        "arm": dataclasses.asdict(arm),
        "data": str(data_path),
        "lr": lr,
        "P": P,
        "config": dataclasses.asdict(config),
    }
    root = str(pathlib.Path(__file__).resolve().parents[2])
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    code = "import sys; from tf_selopt.study.finetune import _rss_child; _rss_child(sys.argv[1])"
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"RSS subprocess for {model_name}/{arm.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_step_times(built, xb, yb, config) -> dict:
    """Median seconds per ``train_on_batch(xb, yb)`` step of each compiled model in ``built`` ({arm: model});
    the arms interleaved round by round in this process, after 3 untimed steps each."""
    for model in built.values():
        for _ in range(3):
            model.train_on_batch(xb, yb)
    times = {name: [] for name in built}
    for _ in range(config.timing_rounds):
        for name, model in built.items():
            for _ in range(config.timing_steps):
                start = time.perf_counter()
                model.train_on_batch(xb, yb)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# ----------------------------------------------------------------------------------------------- the study
def _tune(model_name, weights, arm_list, data, size, P, config, log) -> dict:
    """{family: {"chosen": lr, "val_accuracy": {lr: acc}}} on the validation 5-9 split, seed 0."""
    x, y = subset(data["pool"], size, 0)
    out = {}
    for family in dict.fromkeys(a.family for a in arm_list):
        arm = next(a for a in arm_list if a.family == family and a.keep is None)
        if len(config.learning_rates) == 1:
            out[family] = {"chosen": config.learning_rates[0], "tuned_with": None, "val_accuracy": {}}
            continue
        scores = {}
        for lr in config.learning_rates:
            model, _, _ = train_arm(model_name, weights, arm, x, y, lr=lr, seed=0, P=P, config=config)
            scores[lr] = _accuracy(model, *data["val"])
        best = max(config.learning_rates, key=lambda lr: (scores[lr], -lr))
        out[family] = {
            "chosen": best,
            "tuned_with": arm.name,
            "val_accuracy": {f"{lr:g}": a for lr, a in scores.items()},
        }
        log(f"  lr {model_name} n={size} {family}: {best:g} (val {scores[best]:.3f})")
    return out


def _git(*args) -> str:
    root = pathlib.Path(__file__).resolve().parents[2]
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def run_finetune(out_dir, config: FinetuneConfig | None = None, quiet=False, command=None) -> dict:
    """Run the benchmark; write finetune.json / .md / .png into ``out_dir``; return the result dict.
    ``command``: the command line recorded in the JSON [default: ``sys.argv``]."""
    import keras
    import tensorflow as tf

    from tf_selopt.study.runs import log_test_metrics

    config = config or FinetuneConfig()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = (lambda *a: None) if quiet else (lambda msg: print(msg, flush=True))
    started = time.perf_counter()
    data = transfer_data()
    arm_list = arms(config)
    result = {
        "command": command or " ".join(sys.argv),
        "commit": _git("rev-parse", "HEAD"),
        "tf_selopt_uncommitted_changes": bool(_git("status", "--porcelain", "--", "tf_selopt")),
        "config": dataclasses.asdict(config),
        "arms": [dataclasses.asdict(a) for a in arm_list],
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "cpu_count": os.cpu_count(),
        },
        "data": {k: int(len(v[1])) for k, v in data.items()},
        "models": {},
        "runs": [],
    }
    for model_name in config.models:
        weights, pre = pretrain(model_name, data, out_dir, config.pretrain_epochs)
        P = lora_count(model_name, weights, config.lora_rank)
        N = pre["parameters"]
        log(
            f"{model_name}: N={N:,}, P={P:,} (LoRA r={config.lora_rank}), pretrain acc 0-4 "
            f"{pre['test_accuracy_digits_0_4']:.3f}"
        )
        entry = {"pretrain": pre, "N": N, "P": P, "learning_rates": {}, "step_seconds": {}, "rss": {}}
        result["models"][model_name] = entry
        timed = {}  # the models of the first seed at the largest size, for the step times
        tuned = None
        if config.tune_at is not None:
            tuned = _tune(model_name, weights, arm_list, data, config.tune_at, P, config, log)
            entry["learning_rates"][f"tuned at n={config.tune_at}"] = tuned
        for size in config.sizes:
            lrs = tuned or _tune(model_name, weights, arm_list, data, size, P, config, log)
            entry["learning_rates"][str(size)] = lrs
            for seed in config.seeds:
                x, y = subset(data["pool"], size, seed)
                for arm in arm_list:
                    log_dir = out_dir / "tensorboard" / run_name(model_name, size, seed, arm)
                    logged = seed == config.seeds[0]  # the first seed of every size, as the study's default
                    model, _, info = train_arm(
                        model_name,
                        weights,
                        arm,
                        x,
                        y,
                        lr=lrs[arm.family]["chosen"],
                        seed=seed,
                        P=P,
                        config=config,
                        log_dir=log_dir if logged else None,
                        val=data["val"],
                    )
                    row = {
                        "model": model_name,
                        "size": size,
                        "seed": seed,
                        "arm": arm.name,
                        "family": arm.family,
                        "lr": lrs[arm.family]["chosen"],
                        "test_accuracy": _accuracy(model, *data["test"]),
                        **info,
                    }
                    if logged:
                        log_test_metrics(log_dir, config.steps, {"accuracy": row["test_accuracy"]})
                    result["runs"].append(row)
                    if size == max(config.sizes) and seed == config.seeds[0]:
                        timed[arm.name] = model
                    log(
                        f"  {model_name} n={size} seed={seed} {arm.name:>16}: acc {row['test_accuracy']:.3f} "
                        f"P={info['trainable']:,} opt {info['optimizer_bytes']:,} B"
                    )
        size = max(config.sizes)
        lr_of = {f: v["chosen"] for f, v in entry["learning_rates"][str(size)].items()}
        rss_arms = [
            a for a in arm_list if a.family in ("full", "lora") or (a.criterion in GRADIENT_CRITERIA and a.keep is None)
        ]
        x, y = subset(data["pool"], size, config.seeds[0])
        entry["step_seconds"] = measure_step_times(timed, x[: config.batch_size], y[: config.batch_size], config)
        del timed
        if config.rss == "subprocess":
            with tempfile.TemporaryDirectory() as tmp:
                data_path = pathlib.Path(tmp) / "finetune_data.npz"
                np.savez(data_path, x=x, y=y)
                for arm in rss_arms:
                    rss = measure_rss(model_name, weights, arm, data_path, lr_of[arm.family], P, config)
                    entry["rss"][arm.name] = rss
                    log(
                        f"  rss {model_name} {arm.name}: peak {rss['peak_rss_bytes'] / MIB:.1f} MiB, arm growth "
                        f"{(rss['arm_peak_rss_bytes'] - rss['rss_start_bytes']) / MIB:.1f} MiB"
                    )
    result["summary"] = summarize(result)
    result["goals"] = goals(result)
    result["seconds"] = time.perf_counter() - started
    (out_dir / "finetune.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "finetune.md").write_text(markdown(result))
    plot(result, out_dir / "finetune.png")
    return result


# --------------------------------------------------------------------------------------- summary and goals
def summarize(result) -> dict:
    """{model: {arm: {"trainable", "optimizer_bytes", "step_ms", "peak_rss_mib", "arm_rss_growth_mib",
    "accuracy": {size: [mean, std, n]}}}} over seeds."""
    out = {}
    for model_name, entry in result["models"].items():
        per = out.setdefault(model_name, {})
        for arm in result["arms"]:
            rows = [r for r in result["runs"] if r["model"] == model_name and r["arm"] == arm["name"]]
            if not rows:
                continue
            acc = {}
            for size in sorted({r["size"] for r in rows}):
                v = [100 * r["test_accuracy"] for r in rows if r["size"] == size]
                acc[str(size)] = [statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)]
            rss = entry["rss"].get(arm["name"])
            per[arm["name"]] = {
                "trainable": rows[0]["trainable"],
                "optimizer_bytes": max(r["optimizer_bytes"] for r in rows),
                "optimizer_mask_bytes": max(r["optimizer_mask_bytes"] for r in rows),
                "step_ms": 1e3 * entry["step_seconds"][arm["name"]] if arm["name"] in entry["step_seconds"] else None,
                "peak_rss_mib": rss["peak_rss_bytes"] / MIB if rss else None,
                "arm_rss_growth_mib": (rss["arm_peak_rss_bytes"] - rss["rss_start_bytes"]) / MIB if rss else None,
                "accuracy": acc,
            }
    return out


def goals(result) -> list[dict]:
    """The issue's goals, each with its numbers and met / missed (per model)."""
    out = []
    rank = result["config"]["lora_rank"]
    lora = f"lora_r{rank}"
    for model_name, per in result["summary"].items():
        gradient = [c for c in GRADIENT_CRITERIA if c in per]
        if not gradient or lora not in per:
            continue

        def goal(text, ours, reference, met, model_name=model_name):
            out.append({"model": model_name, "goal": text, "ours": ours, "reference": reference, "met": met})

        sizes = list(per[lora]["accuracy"])
        # one criterion for every size: the best mean accuracy over all sizes (no pick per cell)
        best = max(gradient, key=lambda c: statistics.mean(per[c]["accuracy"][s][0] for s in sizes))
        for s in sizes:
            ours, theirs = per[best]["accuracy"][s][0], per[lora]["accuracy"][s][0]
            goal(f"{best} >= {lora} accuracy at n={s}", ours, theirs, ours >= theirs)
        big = max(sizes, key=int)
        full = per["full"]["accuracy"][big][0]
        ours = per[best]["accuracy"][big][0]
        goal(f"{best} within 1 point of full at n={big}", ours, full, ours >= full - 1.0)
        ours, theirs = per[best]["optimizer_bytes"], per[lora]["optimizer_bytes"]
        goal(f"{best} optimizer bytes <= {lora}", ours, theirs, ours <= theirs)
        if per[best]["peak_rss_mib"] is not None:
            ours, theirs = per[best]["peak_rss_mib"], per["full"]["peak_rss_mib"]
            goal(f"{best} whole-run peak RSS < full (plain Adam)", ours, theirs, ours < theirs)
            ours, theirs = per[best]["arm_rss_growth_mib"], per["full"]["arm_rss_growth_mib"]
            goal(f"{best} arm's RSS growth < full (plain Adam)", ours, theirs, ours < theirs)
        if per[best]["step_ms"] is not None:
            ours, theirs = per[best]["step_ms"], per[lora]["step_ms"]
            goal(f"{best} step time <= {lora}", ours, theirs, ours <= theirs)
    return out


def _fmt(v):
    return "-" if v is None else (f"{v:,.2f}" if isinstance(v, float) else f"{v:,}")


def markdown(result) -> str:
    """The tables (one per model) and the goals, as Markdown."""
    c = result["config"]
    lines = [
        f"Fine-tuning on MNIST digits 5-9 from a model pretrained on digits 0-4 (bundled subset); "
        f"Adam, {c['steps']} steps of batch {c['batch_size']} for every arm; test accuracy % on "
        f"{result['data']['test']} held-out 5-9 images, mean ± std over {len(c['seeds'])} seeds. "
        f"Optimizer bytes: the optimizer's variables after training. Step: median ms per `train_on_batch` "
        f"step, arms interleaved in one process. Peak RSS: a fresh process per arm at n={max(c['sizes'])} "
        f"(`VmHWM`, whole process: import, data, calibration, fit); RSS growth: that process's highest "
        f"VmRSS (sampled every 2 ms) while the arm runs (build, calibration, fit) minus VmRSS at its start."
    ]
    for model_name, per in result["summary"].items():
        entry = result["models"][model_name]
        sizes = [str(s) for s in c["sizes"]]
        lines += [
            "",
            f"**{model_name}** (N = {entry['N']:,}, P = {entry['P']:,} = LoRA r={c['lora_rank']}; "
            f"pretrained: {100 * entry['pretrain']['test_accuracy_digits_0_4']:.1f}% on digits 0-4)",
            "",
        ]
        lines.append(
            "| arm | trains | "
            + " | ".join(f"n={s}" for s in sizes)
            + " | optimizer bytes | step ms | peak RSS MiB | RSS growth MiB |"
        )
        lines.append("|---|---:|" + "---:|" * len(sizes) + "---:|---:|---:|---:|")
        for name, s in per.items():
            accs = [
                f"{s['accuracy'][k][0]:.1f} ± {s['accuracy'][k][1]:.1f}" if k in s["accuracy"] else "-" for k in sizes
            ]
            step = "-" if s["step_ms"] is None else f"{s['step_ms']:.2f}"
            rss = "-" if s["peak_rss_mib"] is None else f"{s['peak_rss_mib']:.0f}"
            growth = "-" if s["arm_rss_growth_mib"] is None else f"{s['arm_rss_growth_mib']:.1f}"
            lines.append(
                f"| {name} | {s['trainable']:,} | "
                + " | ".join(accs)
                + f" | {s['optimizer_bytes']:,} | {step} | {rss} | {growth} |"
            )
        lr = entry["learning_rates"]
        tuned = [(n, fam) for n, fam in lr.items() if not n.isdigit()] or [(f"n={n}", fam) for n, fam in lr.items()]
        lines.append("")
        lines.append(
            f"Learning rates (best validation accuracy of {', '.join(f'{v:g}' for v in c['learning_rates'])}"
            f", seed 0): "
            + "; ".join(f"{n}: " + ", ".join(f"{f} {v['chosen']:g}" for f, v in fam.items()) for n, fam in tuned)
        )
    if result["goals"]:
        lines += ["", "| model | goal | ours | reference | met |", "|---|---|---:|---:|---|"]
        for g in result["goals"]:
            lines.append(
                f"| {g['model']} | {g['goal']} | {_fmt(g['ours'])} | {_fmt(g['reference'])} | "
                f"{'met' if g['met'] else 'missed'} |"
            )
    return "\n".join(lines) + "\n"


def plot(result, path) -> pathlib.Path:
    """Test accuracy vs trainable parameters (log x), one panel per (model, data size), a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    sizes = [str(s) for s in result["config"]["sizes"]]
    fig, axes = plt.subplots(len(summary), len(sizes), figsize=(4.2 * len(sizes), 3.4 * len(summary)), squeeze=False)
    for r, (model_name, per) in enumerate(summary.items()):
        for col, size in enumerate(sizes):
            ax = axes[r][col]
            methods = {}
            for name, s in per.items():
                methods.setdefault(name.split("@")[0], []).append((s["trainable"], *s["accuracy"][size][:2]))
            for method, points in methods.items():
                points.sort()
                x, m, sd = zip(*points)
                ax.errorbar(x, m, yerr=sd, marker="o", ms=4, capsize=2, label=method)
            ax.set_xscale("log")
            ax.set_xlabel("trainable parameters")
            ax.set_ylabel("test accuracy %")
            ax.set_title(f"{model_name}, n={size}", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Fine-tuning MNIST 0-4 -> 5-9: accuracy vs trainable parameters (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)
