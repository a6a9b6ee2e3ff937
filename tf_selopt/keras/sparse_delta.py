"""Keras 3: fine-tune k entries as trainable deltas on frozen kernels, with the gradient computed at k positions.

``sparse_delta(model, positions)`` changes ``model`` in place. Each Dense,
EinsumDense, Embedding, Conv1D or Conv2D layer with selected entries keeps its kernel (made
non-trainable) and gains a trainable vector of ``k`` deltas at fixed flat
indices (a non-trainable int32 variable); its bias, when entries of it are
selected, gets its own delta vector the same way. The layer's forward uses
``W + scatter(deltas)``; its backward is one ``tf.custom_gradient`` over the
whole product ``(x, W, deltas) -> y`` that returns the input gradient and the
deltas' gradient, computed at the k positions only, and no gradient for ``W``:

- Dense and EinsumDense, ``y = einsum(eq, x, W)``: the gradient of entry
  ``W[i..., o...]`` is ``sum over the batch letters of x[..., i...] * dy[..., o...]``;
  ``x`` and ``dy`` are flattened to (columns, rows) and the columns each
  entry needs are gathered (``tf.gather``), so the work is ``rows * k``, never
  ``rows * N``.
- Embedding, ``y = W[ids]``: the gradient of entry ``W[r, c]`` is the sum of
  ``dy[..., c]`` over the looked-up ids equal to ``r`` (``rows * k``).
- Conv1D and Conv2D (channels_last, groups 1, padding valid or same, any
  strides and dilation): the forward is the layer's own convolution; the
  gradient of entry ``W[kh, kw, cin, cout]`` is the sum over the batch and the
  output positions of ``patch[..., kh, kw, cin] * dy[..., cout]``. The patches
  are ``tf.image.extract_patches``' (kh, kw, cin) vectors, built from kh*kw
  strided slices of the padded input (a Conv1D is a height-1 image); that
  tensor is kh*kw times the input (over the strides' product) and exists during
  the backward: the memory cost of a convolution's deltas, usually far larger
  than the dense kernel gradient it replaces. ``dx`` is a transposed
  convolution.

All gather in blocks of at most ``CHUNK_POSITIONS`` positions x ``TILE_ROWS``
rows (``_tiled_sum``), so the backward's transient memory is bounded whatever
the batch.

No N-sized gradient and no N-sized optimizer state exists for those kernels:
``model.trainable_variables`` holds only the delta vectors, so any Keras
optimizer trains them in plain ``compile``/``fit`` (XLA too). Every other
variable of the model is made non-trainable; selected entries in a variable no
layer here covers (LayerNormalization, a depthwise convolution, a custom layer)
are named in the result and in a warning: train those with
``SelectiveOptimizer(masks=...)``.

The changed layers are instances of ``SparseDeltaDense``,
``SparseDeltaEinsumDense``, ``SparseDeltaEmbedding``, ``SparseDeltaConv1D`` and
``SparseDeltaConv2D`` (subclasses, registered
for ``.keras`` files): a functional or Sequential model saves and loads with its
deltas, indices and frozen kernels. ``merge_sparse_delta(model)`` writes the
deltas into the kernels and gives back plain layers.

Not covered, refused by name (``REFUSED``, ``CONV_ALLOWED``): Conv3D,
depthwise, separable and transposed convolutions, a Conv1D/Conv2D with
groups > 1, channels_first or causal padding, a layer with LoRA enabled or
quantized, an EinsumDense equation whose kernel has an axis in neither input
nor output, or whose input has a summed axis outside the kernel.
"""

from __future__ import annotations

import dataclasses
import string
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_selopt.keras import _compat

__all__ = [
    "sparse_delta",
    "enable_sparse_delta",
    "merge_sparse_delta",
    "sparse_delta_positions",
    "sparse_delta_layers",
    "covered_variables",
    "SparseDeltaResult",
    "SparseDeltaDense",
    "SparseDeltaEinsumDense",
    "SparseDeltaEmbedding",
    "SparseDeltaConv1D",
    "SparseDeltaConv2D",
]

#: Layer classes refused by name (a layer's class or one of its bases), with the reason.
REFUSED = {
    "Conv3D": "sparse deltas cover Conv1D and Conv2D, not 3-D convolutions; "
    "train it with SelectiveOptimizer(masks=...)",
    "BaseDepthwiseConv": "a depthwise convolution's kernel is per channel (groups = channels), which sparse deltas "
    "do not cover; train it with SelectiveOptimizer(masks=...)",
    "BaseSeparableConv": "a separable convolution (depthwise then pointwise kernels) is not covered; train it with "
    "SelectiveOptimizer(masks=...)",
    "BaseConvTranspose": "a transposed convolution is not covered; train it with SelectiveOptimizer(masks=...)",
}
#: The layer kinds sparse deltas cover (named in errors).
COVERED = "Dense, EinsumDense, Embedding, Conv1D and Conv2D"
#: What a covered Conv1D/Conv2D must be: {attribute: allowed values}.
CONV_ALLOWED = {"groups": (1,), "data_format": ("channels_last",), "padding": ("valid", "same")}


# ---------------------------------------------------------------- equations


@dataclasses.dataclass(frozen=True)
class _Einsum:
    """A kernel product ``y = einsum(equation, x, W)`` and what its k-position gradient needs.

    ``batch``: the letters of ``x`` outside the kernel (each also in ``y``); ``in_letters`` / ``out_letters``: the
    kernel's letters found in ``x`` / in ``y`` (a letter may be in both).
    """

    equation: str
    x: str
    kernel: str
    y: str

    @property
    def batch(self):
        return [c for c in self.x if c not in self.kernel]

    @property
    def in_letters(self):
        return [c for c in self.kernel if c in self.x]

    @property
    def out_letters(self):
        return [c for c in self.kernel if c in self.y]


def _parse(equation: str, x_rank: int, layer_name: str) -> _Einsum:
    """``equation`` (``"x,kernel->y"``, ``...`` expanded for an input of rank ``x_rank``; None: a check only).

    Raises ValueError naming the layer for an equation the k-position gradient does not handle.
    """
    eq = equation.replace(" ", "")
    inputs, y = eq.split("->")
    x, kernel = inputs.split(",")
    if "..." in x:
        free = [c for c in string.ascii_letters if c not in eq]
        n = 1 if x_rank is None else x_rank - (len(x) - 3)
        ell = "".join(free[:n])
        x, y, kernel = x.replace("...", ell), y.replace("...", ell), kernel.replace("...", ell)
    spec = _Einsum(f"{x},{kernel}->{y}", x, kernel, y)
    lost = [c for c in kernel if c not in x and c not in y]
    summed = [c for c in x if c not in kernel and c not in y]
    if lost or summed or len(set(kernel)) != len(kernel):
        raise ValueError(
            f"Layer {layer_name!r}: sparse deltas do not handle the equation {equation!r} (a kernel axis in neither "
            f"input nor output: {lost}; an input axis summed outside the kernel: {summed}); train this layer with "
            "SelectiveOptimizer(masks=...)."
        )
    return spec


def _columns(indices, shape, letters, kernel_letters):
    """The flat index, into the product of the ``letters`` axes of a kernel of ``shape`` (axes named by
    ``kernel_letters``), of each flat kernel index in ``indices`` (k,) int32."""
    strides = np.cumprod([1] + list(shape[::-1]))[::-1][1:]
    column = tf.zeros_like(indices)
    for c in letters:
        axis = kernel_letters.index(c)
        coordinate = (indices // int(strides[axis])) % int(shape[axis])
        inner = int(np.prod([shape[kernel_letters.index(d)] for d in letters[letters.index(c) + 1 :]], dtype=np.int64))
        column += coordinate * inner
    return column


def _as_columns(t, letters, batch, kept, sizes):
    """``t`` (axes named by ``letters``) transposed to (kept..., batch...) and reshaped to (prod(kept), rows):
    one contiguous row per kernel column, so gathering k of them copies k rows."""
    perm = [letters.index(c) for c in kept + batch]
    width = int(np.prod([sizes[c] for c in kept], dtype=np.int64))
    return tf.reshape(tf.transpose(t, perm), [width, -1])


def _with_deltas(kernel, deltas, indices):
    """``kernel + scatter(deltas at flat indices)`` (the forward's effective kernel, of ``kernel``'s shape)."""
    flat = tf.tensor_scatter_nd_add(tf.reshape(kernel, [-1]), indices[:, None], tf.cast(deltas, kernel.dtype))
    return tf.reshape(flat, tf.shape(kernel))


#: Rows (batch x sequence positions) per tile of the k-position gradient.
TILE_ROWS = 256
#: Positions per chunk: a gathered block holds ``CHUNK_POSITIONS x TILE_ROWS`` elements (1 MiB in float32).
CHUNK_POSITIONS = 1024


def _pad_rows(t, value):
    """``t`` (width, rows) padded along rows with ``value`` to a multiple of ``TILE_ROWS``."""
    if t.shape[1] is not None and t.shape[1] % TILE_ROWS == 0:
        return t
    pad = -tf.shape(t)[1] % TILE_ROWS
    return tf.pad(t, [[0, 0], [0, pad]], constant_values=value)


def _tiled_sum(block, operands, k, dtype):
    """``sum over row tiles of block(tile, chunk)`` for every chunk of the k positions, shape (k,).

    ``operands``: tensors of shape (width, rows), ``rows`` a multiple of TILE_ROWS (it may be unknown until run
    time). ``block(tile, chunk)`` gets the operands' columns of one tile, (width, TILE_ROWS) each, and ``chunk``,
    (CHUNK_POSITIONS,) int32 position numbers, and returns the chunk's (CHUNK_POSITIONS,) partial sums over the
    tile's rows. The loop over tiles is a ``tf.while_loop`` and the loop over chunks a ``tf.map_fn``, so no
    gathered block is larger than CHUNK_POSITIONS x TILE_ROWS whatever the batch; the work is ``rows * k``
    multiply-adds.
    """
    static_rows = operands[0].shape[1]
    if static_rows is not None:  # one tile of all rows, chunks sized to the same block bound
        size = max(1, min(k, (CHUNK_POSITIONS * TILE_ROWS) // max(1, static_rows)))
        n = -(-k // size)
        chunks = tf.reshape(tf.range(n * size) % k, [n, size])
        part = tf.map_fn(lambda chunk: block(operands, chunk), chunks, fn_output_signature=dtype, parallel_iterations=2)
        return tf.reshape(part, [-1])[:k]
    rows = tf.shape(operands[0])[1]
    n = -(-k // CHUNK_POSITIONS)
    chunks = tf.reshape(tf.range(n * CHUNK_POSITIONS) % k, [n, CHUNK_POSITIONS])

    def over_tile(tile, total):
        cut = tuple(tf.slice(t, [0, tile * TILE_ROWS], [-1, TILE_ROWS]) for t in operands)
        part = tf.map_fn(lambda chunk: block(cut, chunk), chunks, fn_output_signature=dtype, parallel_iterations=2)
        return tile + 1, total + tf.reshape(part, [-1])

    _, total = tf.while_loop(
        lambda tile, _: tile * TILE_ROWS < rows, over_tile, (tf.constant(0), tf.zeros([n * CHUNK_POSITIONS], dtype))
    )
    return total[:k]


def _accumulator(dtype):
    """The dtype the k-position sums run in: float32 for float16/bfloat16 inputs (a sum runs over every row of the
    batch), else ``dtype``."""
    dtype = tf.as_dtype(dtype)
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _sum_of_products(a, b, a_index, b_index, k, dtype):
    """``d[j] = sum over rows r of a[a_index[j], r] * b[b_index[j], r]``, shape (k,), in blocks (``_tiled_sum``).

    ``a`` (width_a, rows), ``b`` (width_b, rows): one row per kernel column; ``a_index`` / ``b_index``: (k,) int32.
    The sums run in ``_accumulator(dtype)``.
    """
    acc = _accumulator(dtype)

    def block(tile, chunk):
        a_tile, b_tile = tile
        a_rows = tf.cast(tf.gather(a_tile, tf.gather(a_index, chunk)), acc)
        return tf.reduce_sum(a_rows * tf.cast(tf.gather(b_tile, tf.gather(b_index, chunk)), acc), axis=1)

    return _tiled_sum(block, (_pad_rows(a, 0), _pad_rows(b, 0)), k, acc)


def einsum_with_deltas(spec: _Einsum, x, kernel, deltas, indices):
    """``einsum(spec.equation, x, kernel + scatter(deltas))`` whose gradient is ``(dx, None, d_deltas)``.

    Args:
        spec: the parsed equation.
        x: the input tensor.
        kernel: the frozen kernel (a tensor; it gets no gradient).
        deltas: (k,) float deltas at ``indices``.
        indices: (k,) int32 flat indices into ``kernel``.

    Returns:
        The output tensor. ``d_deltas[j] = sum over batch letters of x[.., in(j)] * dy[.., out(j)]``, shape (k,).
    """
    shape = [int(d) for d in kernel.shape]
    sizes = dict(zip(spec.kernel, shape))
    in_cols = _columns(indices, shape, spec.in_letters, spec.kernel)
    out_cols = _columns(indices, shape, spec.out_letters, spec.kernel)
    k = int(indices.shape[0])
    dx_equation = f"{spec.y},{spec.kernel}->{spec.x}"

    @tf.custom_gradient
    def product(x, kernel, deltas):
        w = _with_deltas(kernel, deltas, indices)
        y = tf.einsum(spec.equation, x, w)

        def grad(dy):
            dx = tf.einsum(dx_equation, dy, w)
            x_cols = _as_columns(x, spec.x, spec.batch, spec.in_letters, sizes)
            dy_cols = _as_columns(dy, spec.y, spec.batch, spec.out_letters, sizes)
            d = _sum_of_products(x_cols, dy_cols, in_cols, out_cols, k, dy.dtype)
            return dx, None, tf.cast(d, deltas.dtype)

        return y, grad

    return product(x, kernel, deltas)


def take_with_deltas(table, deltas, indices, ids):
    """``(table + scatter(deltas))[ids]`` whose gradient is ``(None, d_deltas)``.

    ``d_deltas[j]`` is the sum of ``dy[..., col(j)]`` over the positions whose id is ``row(j)``; shape (k,).
    """
    width = int(table.shape[1])
    k = int(indices.shape[0])
    rows, cols = indices // width, indices % width

    @tf.custom_gradient
    def lookup(table, deltas):
        w = _with_deltas(table, deltas, indices)
        y = tf.gather(w, ids)

        def grad(dy):
            flat_ids = _pad_rows(tf.reshape(tf.cast(ids, indices.dtype), [1, -1]), -1)
            dy_cols = _pad_rows(tf.transpose(tf.reshape(dy, [-1, width])), 0)

            acc = _accumulator(dy.dtype)

            def block(tile, chunk):
                ids_tile, dy_tile = tile
                b = tf.cast(tf.gather(dy_tile, tf.gather(cols, chunk)), acc)
                hit = tf.equal(ids_tile, tf.gather(rows, chunk)[:, None])
                return tf.reduce_sum(tf.where(hit, b, tf.zeros_like(b)), axis=1)

            d = _tiled_sum(block, (flat_ids, dy_cols), k, acc)
            return None, tf.cast(d, deltas.dtype)

        return y, grad

    return lookup(table, deltas)


@dataclasses.dataclass(frozen=True)
class _ConvGeometry:
    """A Conv1D/Conv2D (channels_last, groups 1) seen as a 2-D convolution: Conv1D's length is the width of a
    height-1 image. Each field is (height, width): ``size`` the kernel's taps, ``strides``, ``rates`` the dilation;
    ``padding`` "SAME" or "VALID"."""

    size: tuple
    strides: tuple
    rates: tuple
    padding: str

    @classmethod
    def of(cls, layer):
        pad = (1,) * (2 - layer.rank)
        return cls(
            pad + tuple(layer.kernel_size),
            pad + tuple(layer.strides),
            pad + tuple(layer.dilation_rate),
            layer.padding.upper(),
        )

    def image(self, t):
        """``t`` (batch, [height,] width, channels) as (batch, height, width, channels)."""
        return t if len(t.shape) == 4 else tf.expand_dims(t, 1)

    def patch_columns(self, x):
        """(kh*kw*cin, rows) input patches of ``x`` (batch, h, w, cin): row ``(kh, kw, cin)`` in the kernel's flat
        order, one column per output position (batch, oh, ow), as ``tf.image.extract_patches`` gives them,
        transposed. Built from kh*kw strided slices of the padded input (XLA lowers ``extract_patches`` to a
        convolution with a one-hot kernel, kh*kw*cin times the work)."""
        xt = tf.transpose(x, [3, 0, 1, 2])  # (cin, batch, h, w)
        spans, pads = [], []
        for axis, (taps, stride, rate) in enumerate(zip(self.size, self.strides, self.rates)):
            size = tf.shape(x)[axis + 1]
            reach = (taps - 1) * rate + 1
            out = (size + stride - 1) // stride if self.padding == "SAME" else (size - reach) // stride + 1
            total = tf.maximum((out - 1) * stride + reach - size, 0) if self.padding == "SAME" else 0
            pads.append([total // 2, total - total // 2])
            spans.append((out - 1) * stride + 1)
        xt = tf.pad(xt, [[0, 0], [0, 0], *pads])
        (sh, sw), (rh, rw), (span_h, span_w) = self.strides, self.rates, spans
        taps = [
            xt[:, :, i * rh : i * rh + span_h : sh, j * rw : j * rw + span_w : sw]
            for i in range(self.size[0])
            for j in range(self.size[1])
        ]
        return tf.reshape(tf.concat(taps, axis=0), [len(taps) * int(x.shape[-1]), -1])

    def input_gradient(self, x, w, dy):
        """The gradient of the convolution of ``x`` (batch, h, w, cin) by ``w`` (kh, kw, cin, cout) with respect to
        ``x``, given ``dy`` (batch, oh, ow, cout). A dilated kernel is spread out with zeros first (the CPU
        transposed convolution takes no dilation; the SAME padding of the spread kernel is the same)."""
        if len(w.shape) != 4:  # Conv1D's (kw, cin, cout)
            w = tf.reshape(w, [*self.size, *w.shape[-2:]])
        for axis, rate in enumerate(self.rates):
            if rate > 1:
                taps = self.size[axis]
                spread = tf.pad(
                    tf.expand_dims(w, axis + 1), [[0, rate - 1] if a == axis + 1 else [0, 0] for a in range(5)]
                )
                shape = spread.shape.as_list()
                w = tf.reshape(spread, shape[:axis] + [taps * rate] + shape[axis + 2 :])
                w = tf.slice(w, [0] * 4, shape[:axis] + [(taps - 1) * rate + 1] + shape[axis + 2 :])
        return tf.nn.conv2d_transpose(dy, w, tf.shape(x), [1, *self.strides, 1], self.padding)


def conv_with_deltas(geometry: _ConvGeometry, x, kernel, deltas, indices, convolution):
    """``convolution(x, kernel + scatter(deltas))`` whose gradient is ``(dx, None, d_deltas)``.

    Args:
        geometry: the layer's ``_ConvGeometry``.
        x: the input, (batch, [height,] width, cin).
        kernel: the frozen kernel ([kh,] kw, cin, cout) (a tensor; it gets no gradient).
        deltas: (k,) float deltas at ``indices``.
        indices: (k,) int32 flat indices into ``kernel``.
        convolution: ``(x, kernel) -> y``, the layer's own convolution (the forward).

    Returns:
        ``y``. ``d_deltas[j]``, for the entry (kh, kw, cin, cout) at ``indices[j]``, is the sum over the batch and
        the output positions of ``patch[..., kh, kw, cin] * dy[..., cout]``, shape (k,). The patches tensor is
        kh*kw times the input (over the strides' product), made during the backward.
    """
    k = int(indices.shape[0])
    cout = int(kernel.shape[-1])
    in_cols, out_cols = indices // cout, indices % cout

    @tf.custom_gradient
    def product(x, kernel, deltas):
        w = _with_deltas(kernel, deltas, indices)
        y = convolution(x, w)

        def grad(dy):
            x4, dy4 = geometry.image(x), geometry.image(dy)
            dx = tf.reshape(geometry.input_gradient(x4, w, dy4), tf.shape(x))
            dy_cols = tf.reshape(tf.transpose(dy4, [3, 0, 1, 2]), [cout, -1])
            d = _sum_of_products(geometry.patch_columns(x4), dy_cols, in_cols, out_cols, k, dy.dtype)
            return dx, None, tf.cast(d, deltas.dtype)

        return y, grad

    return product(x, kernel, deltas)


# ---------------------------------------------------------------- layers


class _SparseDeltaMixin:
    """What a layer with sparse deltas adds: the delta and index variables, their build, save/load and config.

    ``sparse_delta_size`` / ``sparse_delta_bias_size``: k of the kernel / bias (0 = none).
    """

    def __init__(self, *args, sparse_delta_size=0, sparse_delta_bias_size=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.sparse_delta_size = int(sparse_delta_size)
        self.sparse_delta_bias_size = int(sparse_delta_bias_size)

    def build(self, input_shape):
        super().build(input_shape)
        self.add_sparse_delta_variables()

    def add_sparse_delta_variables(self):
        """Create the delta and index variables (``sparse_delta_size`` / ``sparse_delta_bias_size`` long)."""
        self.sparse_delta = self.sparse_delta_index = None
        self.sparse_delta_bias = self.sparse_delta_bias_index = None
        if self.sparse_delta_size:
            self.sparse_delta, self.sparse_delta_index = self._delta_pair("sparse_delta", self.sparse_delta_size)
        if self.sparse_delta_bias_size:
            self.sparse_delta_bias, self.sparse_delta_bias_index = self._delta_pair(
                "sparse_delta_bias", self.sparse_delta_bias_size
            )
        for v in self._frozen_base():
            v.trainable = False

    def _delta_pair(self, name, k):
        deltas = self.add_weight(name=name, shape=(k,), initializer="zeros", dtype="float32", trainable=True)
        index = self.add_weight(name=f"{name}_index", shape=(k,), initializer="zeros", dtype="int32", trainable=False)
        return deltas, index

    def base_kernel(self):
        """The frozen kernel (``embeddings`` of an Embedding) the deltas add to."""
        return self.embeddings if isinstance(self, keras.layers.Embedding) else self.kernel

    def _frozen_base(self):
        bias = getattr(self, "bias", None)
        return [self.base_kernel()] + ([bias] if bias is not None else [])

    def _kernel_and_deltas(self):
        """(kernel tensor, deltas, indices) in the compute dtype; deltas None without kernel deltas."""
        kernel = tf.cast(self.base_kernel().value, self.compute_dtype)
        if self.sparse_delta is None:
            return kernel, None, None
        return kernel, tf.cast(self.sparse_delta.value, self.compute_dtype), self.sparse_delta_index.value

    def _effective_bias(self):
        bias = tf.cast(self.bias.value, self.compute_dtype)
        if self.sparse_delta_bias is None:
            return bias
        return _with_deltas(
            bias, tf.cast(self.sparse_delta_bias.value, self.compute_dtype), self.sparse_delta_bias_index
        )

    def sparse_delta_merged(self):
        """(kernel, bias or None) as numpy arrays with the deltas added (what ``merge_sparse_delta`` writes)."""
        kernel = np.array(self.base_kernel().numpy())
        if self.sparse_delta is not None:
            np.add.at(kernel.reshape(-1), self.sparse_delta_index.numpy(), self.sparse_delta.numpy())
        bias = getattr(self, "bias", None)
        if bias is None:
            return kernel, None
        bias = np.array(bias.numpy())
        if self.sparse_delta_bias is not None:
            np.add.at(bias.reshape(-1), self.sparse_delta_bias_index.numpy(), self.sparse_delta_bias.numpy())
        return kernel, bias

    def save_own_variables(self, store):
        # every variable in tracking order (kernel, bias, deltas | indices): the same order a build from config makes
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self):
        return {
            **super().get_config(),
            "sparse_delta_size": self.sparse_delta_size,
            "sparse_delta_bias_size": self.sparse_delta_bias_size,
        }


class _EinsumDenseCall:
    #: the layer's einsum; None: its own ``equation`` (EinsumDense)
    _einsum = None

    def _equation(self, rank):
        return _parse(self._einsum or self.equation, rank, self.path)

    def call(self, inputs, training=None):
        kernel, deltas, indices = self._kernel_and_deltas()
        x = tf.cast(inputs, self.compute_dtype)
        if deltas is None:
            y = tf.einsum(self._einsum or self.equation, x, kernel)
        else:
            y = einsum_with_deltas(self._equation(len(x.shape)), x, kernel, deltas, indices)
        if self.bias is not None:
            y = y + self._effective_bias()
        if self.activation is not None:
            y = self.activation(y)
        return y


class _DenseCall(_EinsumDenseCall):
    _einsum = "...i,io->...o"


@keras.saving.register_keras_serializable(package="tf_selopt")
class SparseDeltaDense(_SparseDeltaMixin, _DenseCall, keras.layers.Dense):
    """``keras.layers.Dense`` with a frozen kernel and trainable deltas at fixed flat indices (``sparse_delta``).

    Example:
        >>> import keras, numpy as np, tf_selopt
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> _ = tf_selopt.sparse_delta(model, {model.layers[0]: np.array([0, 5])})
        >>> type(model.layers[0]).__name__, [tuple(v.shape) for v in model.trainable_variables]
        ('SparseDeltaDense', [(2,)])
    """


@keras.saving.register_keras_serializable(package="tf_selopt")
class SparseDeltaEinsumDense(_SparseDeltaMixin, _EinsumDenseCall, keras.layers.EinsumDense):
    """``keras.layers.EinsumDense`` with a frozen kernel and trainable deltas at fixed flat indices."""


class _EmbeddingCall:
    def call(self, inputs, *args, **kwargs):
        if args or kwargs.get("reverse"):
            raise NotImplementedError(
                f"Layer {self.path!r}: sparse deltas cover the lookup only, not the reverse (tied output) call; "
                "merge_sparse_delta(model) first, or train this layer with SelectiveOptimizer(masks=...)."
            )
        ids = inputs if inputs.dtype in ("int32", "int64") else tf.cast(inputs, "int32")
        table, deltas, indices = self._kernel_and_deltas()
        if deltas is None:
            return tf.gather(table, ids)
        return take_with_deltas(table, deltas, indices, ids)


@keras.saving.register_keras_serializable(package="tf_selopt")
class SparseDeltaEmbedding(_SparseDeltaMixin, _EmbeddingCall, keras.layers.Embedding):
    """``keras.layers.Embedding`` with a frozen table and trainable deltas at fixed flat indices."""


class _ConvCall:
    def call(self, inputs):
        kernel, deltas, indices = self._kernel_and_deltas()
        x = tf.cast(inputs, self.compute_dtype)
        if deltas is None:
            y = self.convolution_op(x, kernel)
        else:
            y = conv_with_deltas(_ConvGeometry.of(self), x, kernel, deltas, indices, self.convolution_op)
        if self.bias is not None:
            y = y + self._effective_bias()
        if self.activation is not None:
            y = self.activation(y)
        return y


@keras.saving.register_keras_serializable(package="tf_selopt")
class SparseDeltaConv1D(_SparseDeltaMixin, _ConvCall, keras.layers.Conv1D):
    """``keras.layers.Conv1D`` (channels_last, groups 1, padding valid or same) with a frozen kernel and trainable
    deltas at fixed flat indices; the deltas' gradient is computed from the input's patches (``conv_with_deltas``)."""


@keras.saving.register_keras_serializable(package="tf_selopt")
class SparseDeltaConv2D(_SparseDeltaMixin, _ConvCall, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` (channels_last, groups 1, padding valid or same) with a frozen kernel and trainable
    deltas at fixed flat indices.

    Example:
        >>> import keras, numpy as np, tf_selopt
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> _ = tf_selopt.sparse_delta(model, {model.layers[0]: np.array([0, 50, 107])})
        >>> type(model.layers[0]).__name__, [tuple(v.shape) for v in model.trainable_variables]
        ('SparseDeltaConv2D', [(3,)])
    """


_ATTRIBUTES = ("sparse_delta", "sparse_delta_index", "sparse_delta_bias", "sparse_delta_bias_index")
_ATTRIBUTES += ("sparse_delta_size", "sparse_delta_bias_size")

#: Keras class -> (its sparse-delta class, the call mixin); subclasses of these get a class made on first use.
_KINDS = {
    keras.layers.Dense: (SparseDeltaDense, _DenseCall),
    keras.layers.EinsumDense: (SparseDeltaEinsumDense, _EinsumDenseCall),
    keras.layers.Embedding: (SparseDeltaEmbedding, _EmbeddingCall),
    keras.layers.Conv1D: (SparseDeltaConv1D, _ConvCall),
    keras.layers.Conv2D: (SparseDeltaConv2D, _ConvCall),
}
_MADE = {}


def _sparse_class(cls):
    """The sparse-delta class for the layer class ``cls`` (a subclass of a supported kind gets one made and kept)."""
    for base, (made, call) in _KINDS.items():
        if cls is base:
            return made
        if issubclass(cls, base):
            if cls not in _MADE:
                _MADE[cls] = type(f"SparseDelta{cls.__name__}", (_SparseDeltaMixin, call, cls), {})
            return _MADE[cls]
    return None


# ---------------------------------------------------------------- positions


@dataclasses.dataclass
class SparseDeltaResult:
    """What ``sparse_delta`` did.

    Attributes:
        layers: {layer path: k trained in it (kernel + bias)}.
        trained: the total number of deltas (k).
        uncovered: {variable path: selected entries} in variables no sparse-delta layer covers; they are frozen:
            train them with ``SelectiveOptimizer(masks=...)`` instead.
        frozen: paths of the other variables made non-trainable.
    """

    layers: dict
    trained: int
    uncovered: dict
    frozen: list


def _owners(model):
    """{id(variable): (layer, "kernel" | "bias")} for the kernels and biases of the layers sparse deltas cover, and
    {id(variable): layer} for those of refused layers."""
    covered, refused = {}, {}
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, _SparseDeltaMixin):
            for v in layer.weights:
                refused[id(v)] = layer
        elif _sparse_class(type(layer)) is not None and layer.built:
            kernel = layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel
            covered[id(kernel)] = (layer, "kernel")
            if getattr(layer, "bias", None) is not None:
                covered[id(layer.bias)] = (layer, "bias")
        else:
            for v in layer.weights:
                refused.setdefault(id(v), layer)
    return covered, refused


def _as_indices(value, variable, where):
    """``value`` (a bool mask of ``variable``'s shape, or int flat indices) as sorted unique int32 flat indices."""
    n = int(np.prod(variable.shape, dtype=np.int64))
    array = np.asarray(value)
    if array.dtype == bool:
        if array.shape != tuple(variable.shape):
            raise ValueError(
                f"{where}: a boolean mask must have the variable's shape {tuple(variable.shape)}; received shape "
                f"{array.shape}."
            )
        return np.flatnonzero(array).astype(np.int32)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{where}: positions must be a boolean mask or integer flat indices; received dtype {array.dtype}."
        )
    if array.ndim != 1:
        raise ValueError(f"{where}: integer positions must be 1-D flat indices; received shape {array.shape}.")
    if array.size and (array.min() < 0 or array.max() >= n):
        raise ValueError(
            f"{where}: positions must be in [0, {n}) (the variable's {n} entries); received min {array.min()}, "
            f"max {array.max()}."
        )
    unique = np.unique(array)
    if unique.size != array.size:
        raise ValueError(f"{where}: positions are duplicated ({array.size - unique.size} repeats); give each once.")
    return unique.astype(np.int32)


def _resolve(model, positions):
    """``positions`` as [(variable, indices)], variables found in ``model``."""
    variables = {id(v): v for v in model.weights}
    by_path = {v.path: v for v in model.weights}
    if isinstance(positions, (list, tuple)):
        trainable = model.trainable_variables
        if len(positions) != len(trainable):
            raise ValueError(
                f"`positions` as a list must have one mask per model.trainable_variables entry ({len(trainable)}, "
                f"as calibrate returns them); received {len(positions)}."
            )
        pairs = list(zip(trainable, positions))
    elif isinstance(positions, dict):
        pairs = []
        for key, value in positions.items():
            if isinstance(key, keras.layers.Layer):
                if _sparse_class(type(key)) is None:
                    raise ValueError(_unsupported(key))
                if not key.built:
                    raise ValueError(f"Layer {key.path!r} in `positions` is not built; build the model first.")
                variable = key.embeddings if isinstance(key, keras.layers.Embedding) else key.kernel
            elif isinstance(key, str):
                variable = by_path.get(key)
            else:
                variable = key
            if variable is None or id(variable) not in variables:
                raise ValueError(
                    f"`positions` key {getattr(key, 'path', key)!r} is not a variable (path), or layer, of model "
                    f"{model.name!r}; its variables include {list(by_path)[:6]}."
                )
            pairs.append((variable, value))
    else:
        raise TypeError(
            "`positions` must be the list of masks calibrate returns, or a dict {variable path, variable or layer: "
            f"bool mask or int flat indices}}; received {type(positions).__name__}."
        )
    return [(v, _as_indices(value, v, f"`positions` for {v.path!r}")) for v, value in pairs]


def _unsupported(layer):
    kind = type(layer).__name__
    reason = next((REFUSED[c.__name__] for c in type(layer).__mro__ if c.__name__ in REFUSED), None)
    reason = reason or f"sparse deltas cover {COVERED} (and their subclasses)"
    return f"Layer {layer.path!r} ({kind}) is not supported: {reason}."


def _check_layer(layer, kernel_k):
    if getattr(layer, "lora_enabled", False):
        raise ValueError(
            f"Layer {layer.path!r} has LoRA enabled; sparse deltas and LoRA on one layer are refused "
            "(argument `positions`: leave this layer out, or build the model without LoRA)."
        )
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            f"Layer {layer.path!r} is quantized ({layer.quantization_mode}); sparse deltas need a float kernel."
        )
    if kernel_k and isinstance(layer, keras.layers.EinsumDense):
        _parse(layer.equation, None, layer.path)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        bad = {name: getattr(layer, name) for name, ok in CONV_ALLOWED.items() if getattr(layer, name) not in ok}
        if bad:
            raise ValueError(
                f"Layer {layer.path!r} ({type(layer).__name__}) has "
                f"{', '.join(f'{name}={value!r}' for name, value in bad.items())}; sparse deltas need "
                f"{', '.join(f'{name} in {list(CONV_ALLOWED[name])}' for name in bad)} (argument `positions`: leave "
                "this layer out and train it with SelectiveOptimizer(masks=...))."
            )


def _plan(model, positions):
    """Checks everything and returns ({layer: {"kernel": idx, "bias": idx}}, uncovered {path: count})."""
    pairs = _resolve(model, positions)
    covered, refused = _owners(model)
    plan, uncovered = {}, {}
    for variable, indices in pairs:
        if not indices.size:
            continue
        owner = covered.get(id(variable))
        if owner is None:
            layer = refused.get(id(variable))
            if isinstance(layer, _SparseDeltaMixin):
                raise ValueError(
                    f"Layer {layer.path!r} already has sparse deltas (argument `positions`: {variable.path!r}); "
                    "merge_sparse_delta(model) first."
                )
            uncovered[variable.path] = int(indices.size)
            continue
        layer, role = owner
        plan.setdefault(layer, {})[role] = indices
    for layer, roles in plan.items():
        _check_layer(layer, len(roles.get("kernel", ())))
    return plan, uncovered


# ---------------------------------------------------------------- public


def enable_sparse_delta(layer, positions, bias_positions=None):
    """Give ``layer`` trainable deltas at ``positions`` of its kernel (and ``bias_positions`` of its bias).

    The kernel and bias become non-trainable; the layer becomes a ``SparseDelta*`` subclass of its class.

    Args:
        layer: a built Dense, EinsumDense, Embedding, Conv1D or Conv2D (or subclass) layer.
        positions: a bool mask of the kernel's shape, or 1-D int flat indices into it (unique, in [0, N)).
        bias_positions: the same for the bias, or None.

    Returns:
        ``layer``.

    Example:
        >>> import keras, numpy as np, tf_selopt
        >>> layer = keras.layers.Dense(3)
        >>> layer.build((None, 4))
        >>> _ = tf_selopt.enable_sparse_delta(layer, np.array([1, 7]))
        >>> [tuple(v.shape) for v in layer.trainable_weights], layer.sparse_delta_index.numpy().tolist()
        ([(2,)], [1, 7])
    """
    if isinstance(layer, _SparseDeltaMixin):
        raise ValueError(
            f"Layer {layer.path!r} (argument `layer`) already has sparse deltas; merge_sparse_delta first."
        )
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"`layer` must be a Keras layer; received {type(layer).__name__}.")
    if _sparse_class(type(layer)) is None:
        raise ValueError(f"Argument `layer`: {_unsupported(layer)}")
    if not layer.built:
        raise ValueError(f"Layer {layer.path!r} is not built; build it (or call it once) first.")
    kernel = layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel
    roles = {"kernel": _as_indices(positions, kernel, f"Layer {layer.path!r} argument `positions`")}
    if bias_positions is not None:
        if getattr(layer, "bias", None) is None:
            raise ValueError(f"Layer {layer.path!r} has no bias; `bias_positions` must be None.")
        roles["bias"] = _as_indices(bias_positions, layer.bias, f"Layer {layer.path!r} argument `bias_positions`")
    _check_layer(layer, len(roles["kernel"]))
    _apply(layer, roles)
    return layer


def _apply(layer, roles):
    kernel_idx = roles.get("kernel", np.zeros(0, np.int32))
    bias_idx = roles.get("bias", np.zeros(0, np.int32))
    with _compat.unlocked(layer):
        layer.__class__ = _sparse_class(type(layer))
        layer.sparse_delta_size = int(kernel_idx.size)
        layer.sparse_delta_bias_size = int(bias_idx.size)
        layer.add_sparse_delta_variables()
    if kernel_idx.size:
        layer.sparse_delta_index.assign(kernel_idx)
    if bias_idx.size:
        layer.sparse_delta_bias_index.assign(bias_idx)


def sparse_delta(model, positions, *, warn=True) -> SparseDeltaResult:
    """Train ``model`` on sparse deltas at ``positions``: every covered kernel frozen, k deltas trainable.

    Args:
        model: a built Keras 3 model (TensorFlow backend).
        positions: the list of bool masks ``tf_selopt.calibrate`` returns (one per ``model.trainable_variables``
            entry), or a dict {variable path, variable or layer (its kernel): bool mask or int flat indices}.
        warn: warn when selected entries fall in variables no sparse-delta layer covers.

    Returns:
        A ``SparseDeltaResult``. ``model`` is changed in place: afterwards ``model.trainable_variables`` are
        the delta vectors only (every other variable is made non-trainable). Compile it afterwards (an
        optimizer built before holds the old variables).

    Raises:
        ValueError / TypeError naming the layer and argument, before anything changes: positions out of range,
        duplicated, of the wrong dtype or shape; an unsupported layer given as a key; LoRA enabled or
        sparse deltas already there on a selected layer; an EinsumDense equation not handled.

    Example:
        >>> import keras, numpy as np, tf_selopt
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
        >>> x, y = np.random.rand(64, 4).astype("float32"), np.random.rand(64, 2).astype("float32")
        >>> masks = tf_selopt.calibrate(model, (x, y), loss="mse", keep=6, steps=2)
        >>> result = tf_selopt.sparse_delta(model, masks)
        >>> result.trained, sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        (6, 6)
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"`model` must be a built keras.Model; received {type(model).__name__}.")
    plan, uncovered = _plan(model, positions)
    if not plan:
        raise ValueError(
            f"`positions` select no entry in a layer sparse deltas cover ({COVERED}); "
            f"selected entries are in {list(uncovered) or 'no variable'}."
        )
    for layer, roles in plan.items():
        _apply(layer, roles)
    _forget_traced(model)
    deltas = {id(v) for layer in plan for v in (layer.sparse_delta, layer.sparse_delta_bias) if v is not None}
    frozen = []
    for v in model.weights:
        if v.trainable and id(v) not in deltas:
            v.trainable = False
            frozen.append(v.path)
    if uncovered and warn:
        warnings.warn(
            f"sparse_delta: {sum(uncovered.values())} selected entries are in variables no sparse-delta layer "
            f"covers, and are not trained: {uncovered}. Train them with SelectiveOptimizer(masks=...).",
            stacklevel=2,
        )
    layers = {layer.path: layer.sparse_delta_size + layer.sparse_delta_bias_size for layer in plan}
    return SparseDeltaResult(layers=layers, trained=sum(layers.values()), uncovered=uncovered, frozen=frozen)


def covered_variables(model) -> list:
    """The variables of ``model`` that sparse deltas can train: the kernels and biases of its Dense, EinsumDense,
    Embedding, Conv1D and Conv2D layers that ``sparse_delta`` accepts (no LoRA, no quantization, a handled equation
    or convolution), in ``model.weights`` order."""
    covered, _ = _owners(model)
    return [v for v in model.weights if id(v) in covered and _accepted(covered[id(v)][0])]


def _accepted(layer):
    try:
        _check_layer(layer, 1)
    except ValueError:
        return False
    return True


def sparse_delta_layers(model) -> list:
    """The layers of ``model`` that have sparse deltas, depth-first."""
    return [layer for layer in _compat.flatten_layers(model) if isinstance(layer, _SparseDeltaMixin)]


def sparse_delta_positions(model) -> dict:
    """{kernel or bias variable path: int32 flat indices} of the deltas in ``model`` (a ``positions`` argument)."""
    out = {}
    for layer in sparse_delta_layers(model):
        if layer.sparse_delta is not None:
            out[layer.base_kernel().path] = layer.sparse_delta_index.numpy()
        if layer.sparse_delta_bias is not None:
            out[layer.bias.path] = layer.sparse_delta_bias_index.numpy()
    return out


def merge_sparse_delta(model):
    """Write every layer's deltas into its kernel and bias; the layers become plain Keras layers again.

    The merged kernels and biases become trainable again; other variables keep their flags (``sparse_delta``
    froze them: ``model.trainable = True`` unfreezes all).

    Returns:
        ``model`` (changed in place), ready for ``tf_selopt.deploy``'s exports.

    Raises:
        ValueError: if ``model`` has no sparse deltas (e.g. merged already).

    Example:
        >>> import keras, numpy as np, tf_selopt
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> _ = tf_selopt.sparse_delta(model, {model.layers[0]: np.array([0])})
        >>> type(tf_selopt.merge_sparse_delta(model).layers[0]).__name__
        'Dense'
    """
    layers = sparse_delta_layers(model)
    if not layers:
        raise ValueError(f"`model` {model.name!r} has no sparse deltas to merge (merged already?).")
    for layer in layers:
        kernel, bias = layer.sparse_delta_merged()
        plain = next(c for c in type(layer).__mro__[1:] if issubclass(c, keras.layers.Layer))  # mixins are not
        layer.base_kernel().assign(kernel)
        layer.base_kernel().trainable = True
        if bias is not None:
            layer.bias.assign(bias)
            layer.bias.trainable = True
        with _compat.unlocked(layer):
            for name in _ATTRIBUTES:
                delattr(layer, name)  # a variable is untracked too
            layer.__class__ = plain
    _forget_traced(model)
    return model


def _forget_traced(model):
    """Drop ``model``'s traced fit/evaluate/predict steps: they captured the layers' calls as they were."""
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
