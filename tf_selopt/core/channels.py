"""Channel groups for structured pruning: which channels must go together, and which to remove.

Keras-free and pure (lists and NumPy arrays in, lists and NumPy arrays out): the Keras 3 front end
(``tf_selopt.keras.shrink``) describes a model as a list of ``Node``; this module finds its channel
groups (``analyze``), picks the channels to remove from per-channel scores (``choose``) and maps the
kept channels of every group to the indices of any tensor's last axis (``kept_indices``).

The model (DepGraph, Fang et al. CVPR 2023, Torch-Pruning): every producer (a Dense or convolution
kernel) creates a *space* of channels; layers that keep channels in place (BatchNormalization, an
activation, pooling, a depthwise convolution) pass their input's layout on; elementwise merges (``Add``)
unite the spaces of their inputs (a residual channel goes in every branch at once, or not at all);
``Concatenate`` (last axis) lays its inputs' spaces side by side; ``Flatten`` repeats its input's layout
once per spatial position. A space united with a model input or output, or feeding a layer that mixes
channels (softmax over the last axis, LayerNormalization), is *locked*: never shrunk. A group is one
space after all unions, with every producer of it.

A *layout* is a tuple of segments ``(space, repeat)``: the tensor's last axis is the segments one after
the other, segment ``(s, r)`` holding channel ``c`` of space ``s`` at ``c * r .. c * r + r - 1``
(``repeat`` > 1 after a depthwise convolution with ``depth_multiplier`` r).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tf_selopt.core.selection import count_of

#: What a node does to the channels (the last axis) of its input.
KINDS = (
    "input",  # a model input: a new locked space of ``size`` channels
    "produce",  # a kernel: consumes its input's layout, creates a new space of ``size`` channels
    "follow",  # keeps channels in place (BatchNormalization, activations, pooling, Dropout, ...)
    "depthwise",  # keeps channels in place, each one ``repeat`` times (depth_multiplier)
    "unite",  # elementwise merge of same-shaped inputs (Add, Multiply, ...): their spaces become one
    "concat",  # Concatenate along the last axis
    "flatten",  # Flatten of a channels-last tensor with ``repeat`` spatial positions
    "lock",  # mixes channels but keeps the shape (softmax over channels, LayerNormalization): locks its input
    "opaque",  # anything else: fine only where nothing it receives can shrink; a new locked space of ``size``
)
SCOPES = ("global", "per_layer")


@dataclasses.dataclass(frozen=True)
class Node:
    """One layer call: ``name``, ``kind`` (``KINDS``), the names of the nodes it reads (``inputs``, in
    order), ``size`` (channels of a new space: ``input``, ``produce``, ``opaque``) and ``repeat``
    (``depthwise``: depth_multiplier; ``flatten``: spatial positions)."""

    name: str
    kind: str
    inputs: tuple = ()
    size: int = 0
    repeat: int = 1
    what: str = ""  # for messages: the layer's class
    lock_output: bool = False  # a kernel whose activation mixes its channels (softmax): its space is locked


@dataclasses.dataclass
class Group:
    """Channels that are removed together: ``size`` channels, created by the kernels of ``producers``."""

    id: int
    size: int
    producers: list


@dataclasses.dataclass
class ChannelGraph:
    """``analyze``'s result: the prunable ``groups`` (in order of their first producer), each node's output
    layout (``layouts``), the layout each node reads (``input_layouts``: one layout per input), and ``group_of``
    mapping every space (an int) to its group's id or None when it is locked."""

    groups: list
    layouts: dict
    input_layouts: dict
    group_of: dict
    sizes: dict

    def kept_indices(self, layout, kept: dict) -> np.ndarray:
        """Indices along a tensor's last axis of ``layout`` that stay when group ``g`` keeps channels ``kept[g]``
        (sorted ascending; a locked space keeps all)."""
        return kept_indices(layout, self.sizes, self.group_of, kept)


def kept_indices(layout, sizes, group_of, kept) -> np.ndarray:
    """See ``ChannelGraph.kept_indices``."""
    parts, offset = [], 0
    for space, repeat in layout:
        group = group_of.get(space)
        channels = np.arange(sizes[space]) if group is None or group not in kept else np.asarray(kept[group])
        parts.append(offset + (channels[:, None] * repeat + np.arange(repeat)[None, :]).reshape(-1))
        offset += sizes[space] * repeat
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0,), np.int64)


class _Spaces:
    """Union-find over spaces, with locks."""

    def __init__(self):
        self.parent, self.size, self.locked = [], [], []

    def new(self, size, locked=False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        self.locked.append(locked)
        return len(self.parent) - 1

    def find(self, s) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def unite(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            a, b = min(a, b), max(a, b)
            self.parent[b] = a
            self.locked[a] = self.locked[a] or self.locked[b]

    def lock(self, s):
        self.locked[self.find(s)] = True


def analyze(nodes, outputs) -> ChannelGraph:
    """The channel groups of a graph of ``nodes`` (a list of ``Node`` in topological order) whose model
    outputs are the nodes named in ``outputs``.

    Raises ValueError naming every ``opaque`` node that receives channels which could shrink (a Reshape, an
    LSTM or a custom layer after a pruned kernel): nothing is shrunk when one is there.
    """
    spaces = _Spaces()
    layouts, input_layouts, producer_space = {}, {}, {}
    for node in nodes:
        if node.kind not in KINDS:
            raise ValueError(f"node {node.name!r}: unknown kind {node.kind!r}; expected one of {KINDS}.")
        ins = [layouts[name] for name in node.inputs]
        input_layouts[node.name] = ins
        if node.kind == "input":
            out = ((spaces.new(node.size, locked=True), 1),)
        elif node.kind == "produce":
            space = spaces.new(node.size, locked=node.lock_output)
            producer_space[node.name] = space
            out = ((space, 1),)
        elif node.kind == "opaque":
            out = ((spaces.new(node.size, locked=True), 1),)
        elif node.kind == "lock":
            for layout in ins:
                for space, _ in layout:
                    spaces.lock(space)
            out = ins[0]
        elif node.kind == "follow":
            out = ins[0]
        elif node.kind == "depthwise":
            out = tuple((space, repeat * node.repeat) for space, repeat in ins[0])
        elif node.kind == "flatten":
            out = ins[0] * node.repeat
        elif node.kind == "concat":
            out = tuple(segment for layout in ins for segment in layout)
        else:  # unite
            out = ins[0]
            for layout in ins[1:]:
                if [(spaces.size[s], r) for s, r in layout] == [(spaces.size[s], r) for s, r in out]:
                    for (a, _), (b, _) in zip(out, layout):
                        spaces.unite(a, b)
                else:  # differently split (e.g. Add of a Concatenate and one kernel): keep them all
                    for layout_ in ins:
                        for space, _ in layout_:
                            spaces.lock(space)
        layouts[node.name] = out
    for name in outputs:
        for space, _ in layouts[name]:
            spaces.lock(space)

    def locked(space):
        return spaces.locked[spaces.find(space)]

    problems = []
    for node in nodes:
        if node.kind == "opaque":
            sources = [s for layout in input_layouts[node.name] for s, _ in layout if not locked(s)]
            if sources:
                roots = {spaces.find(x) for x in sources}
                producers = sorted(n for n, s in producer_space.items() if spaces.find(s) in roots)
                names = ", ".join(map(repr, producers))
                problems.append(f"{node.name!r} ({node.what or 'opaque'}) receives the shrinkable channels of {names}")
    if problems:
        raise ValueError("; ".join(problems))

    roots, groups = {}, []
    for node in nodes:  # groups in order of their first producer
        if node.name in producer_space:
            root = spaces.find(producer_space[node.name])
            if spaces.locked[root]:
                continue
            if root not in roots:
                roots[root] = len(groups)
                groups.append(Group(len(groups), spaces.size[root], []))
            groups[roots[root]].producers.append(node.name)
    group_of = {s: roots.get(spaces.find(s)) for s in range(len(spaces.parent))}
    sizes = dict(enumerate(spaces.size))
    return ChannelGraph(groups, layouts, input_layouts, group_of, sizes)


def removal_counts(sizes, fraction: float) -> list[int]:
    """Channels removed per group at ``fraction`` in scope ``"per_layer"``: ``floor(fraction * n + 0.5)``
    (``tf_selopt.core.selection.count_of``), at most ``n - 1`` (a layer keeps at least one channel)."""
    return [min(count_of(fraction, n), n - 1) for n in sizes]


def normalized(scores) -> np.ndarray:
    """A group's scores divided by their mean (Torch-Pruning's default ``normalizer="mean"``), so that
    groups of different fan-in compare in ``scope="global"``; unchanged where the mean is 0."""
    scores = np.asarray(scores, np.float64)
    mean = float(scores.mean()) if scores.size else 0.0
    return scores / mean if mean > 0 and math.isfinite(mean) else scores


def choose(scores, fraction: float, scope: str = "global") -> list[np.ndarray]:
    """The channels each group keeps (sorted indices), given ``scores`` (one 1-D array per group: a
    channel's importance) and the ``fraction`` of channels to remove.

    ``"per_layer"``: each group of n channels loses its ``floor(fraction * n + 0.5)`` lowest-scored ones.
    ``"global"``: ``floor(fraction * N + 0.5)`` of all N channels of all groups go, the lowest of
    ``normalized`` scores first. Either way a group keeps at least one channel (so ``"global"`` may remove
    fewer when ``fraction`` is near 1). Ties go to the lower index (removed first: group order, then
    channel index).

    >>> [k.tolist() for k in choose([[3.0, 1.0, 2.0, 4.0], [1.0, 1.0]], 0.5, "per_layer")]
    [[0, 3], [1]]
    """
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}; received scope={scope!r}.")
    scores = [np.asarray(s, np.float64).reshape(-1) for s in scores]
    if scope == "per_layer":
        kept = []
        for s, r in zip(scores, removal_counts([len(s) for s in scores], fraction)):
            order = np.argsort(s, kind="stable")
            kept.append(np.sort(order[r:]))
        return kept
    total = sum(len(s) for s in scores)
    budget = count_of(fraction, total)
    flat = [(v, g, c) for g, s in enumerate(scores) for c, v in enumerate(normalized(s))]
    flat.sort()
    left = [len(s) for s in scores]
    removed = [set() for _ in scores]
    for _, g, c in flat:
        if budget == 0:
            break
        if left[g] > 1:
            removed[g].add(c)
            left[g] -= 1
            budget -= 1
    return [np.array([c for c in range(len(s)) if c not in removed[g]], np.int64) for g, s in enumerate(scores)]
