"""The Keras 3 front end's side of the selected-only path: releasing the warm-up state, the XLA layout.

``WarmupRelease`` is a mixin of ``tf_selopt.SelectiveOptimizer``: after the selection of a run without
``reselect_every`` the restricted phase reads k-sized state only (``tf_selopt.core.update_paths.SelectedOnlyPath``),
and the N-sized warm-up state (the inner optimizer's slots and moving averages, the criterion's window state,
the scores) leaves ``variables``, checkpoints and ``.keras`` files: emptied in-graph by the selection step
where it can, or by ``release_warmup_state``. A file or weight list saved with the released layout loads
into a fresh optimizer. The layout methods specialize restricted steps traced under XLA to the held
selection (``tf_selopt.keras.phases.TracePerPhase`` uses them).
"""

from __future__ import annotations

import warnings

import tensorflow as tf

from tf_selopt.keras import _compat, profiles

__all__ = ["StateNotLoadedWarning", "WarmupRelease"]


class StateNotLoadedWarning(UserWarning):
    """A saved ``SelectiveOptimizer`` state that did not load (``SelectiveOptimizer.load_own_variables``)."""


class WarmupRelease:
    """Release of the warm-up state and the XLA layout of the selected-only path (a mixin before
    ``SelectiveFrontEnd``; the class sets ``_selective`` and ``inner_optimizer``)."""

    _released_bytes = 0

    def release_warmup_state(self, keep_scores=False) -> int:
        """Drop the N-sized state the restricted phase no longer reads; returns the bytes released.

        After the selection of a run without ``reselect_every`` on the selected-only path
        (``update_path``), the warm-up's inner optimizer slots (e.g. Adam's two moments, its moving
        averages) and the criterion's window state leave ``variables``, checkpoints and ``.keras`` files.
        The scores go too unless ``keep_scores`` (TensorBoard histograms read them). The masks (1 B/param)
        and the k-sized state stay. Calling it again returns 0, unless scores kept so far (``keep_scores``)
        are now to go (``keep_scores=False``): then their bytes.

        The selection step does this itself wherever it can: outside XLA and ``tf.distribute`` strategies
        it empties those variables in-graph (``update_paths.SelectedOnlyPath.releases_at_selection``), so in
        a plain ``fit`` or ``tf.function`` loop their memory goes at the selection, with no callback and no
        retrace, and this call finds it done (``released_bytes`` says how much went; ``keep_scores`` keeps
        the scores there, set before the step is traced). Under XLA (``jit_compile=True``, compiled resources keep their
        shape) or a strategy, call this after the selection: the variables leave this object, and their
        memory once nothing else references them (a traced train step does: ``tf_selopt.keras.TracePerPhase``
        calls this and drops the steps traced before). Every later step is traced as a restricted one.

        Resuming: a ``.keras`` file or ``get_weights`` list with the released layout loads into a fresh
        optimizer as is (``load_own_variables`` releases first); for ``tf.train.Checkpoint``, restore
        (``read(...)``), then call this, then ``assert_existing_objects_matched()``.

        Example:
            >>> import keras, numpy as np, tf_selopt
            >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
            >>> opt = tf_selopt.SelectiveOptimizer(keras.optimizers.Adam(1e-3), keep=4, warmup_steps=2, window=1)
            >>> model.compile(optimizer=opt, loss="mse")
            >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 8)), batch_size=2, epochs=1, verbose=0)
            >>> opt.release_warmup_state()  # the selection step released it already
            0
            >>> opt.warmup_state_released, opt.released_bytes, opt.scores  # Adam's m and v, scores, window sums
            (True, 640, None)
        """
        self._sync_release()
        if self.warmup_state_released:
            if keep_scores or self._selective.scores is None:
                return 0
            return self._release_scores()  # the selection step kept them (``keep_scores``): they go now
        if not self.built:
            raise ValueError("`release_warmup_state` needs a built optimizer after its selection; it is not built.")
        if self.update_path != "selected_only":
            raise ValueError(
                "`release_warmup_state` needs `update_path` 'selected_only'; this optimizer runs masked "
                f"({self.update_path_reason}), where the inner optimizer's N-sized state is what it updates."
            )
        if int(tf.convert_to_tensor(self.selections)) == 0:
            raise ValueError("`release_warmup_state` must follow the selection: `selections` is 0.")
        return self._release(keep_scores)

    def _warmup_slot_names(self):
        """The inner optimizer's per-variable slot lists the restricted phase does not read on the selected-only
        path (its moments, its moving averages)."""
        return profiles.per_variable_state(self.inner_optimizer)

    def _warmup_slots(self):
        inner = self.inner_optimizer
        return [v for name in self._warmup_slot_names() for v in (_compat.state(inner, name) or ()) if v is not None]

    def _release(self, keep_scores):
        slots = self._warmup_slots()
        own = self._selective.release(keep_scores)  # raises with reselect_every
        released = own + slots
        _compat.release(self, own)
        _compat.release(self.inner_optimizer, slots, self._warmup_slot_names())
        self._released_bytes = sum(int(v.shape.num_elements()) * tf.as_dtype(v.dtype).size for v in released)
        return self._released_bytes

    def _release_scores(self):
        scores = self._selective.drop_scores()
        _compat.release(self, scores)
        released = sum(int(v.shape.num_elements()) * tf.as_dtype(v.dtype).size for v in scores)
        self._released_bytes += released
        return released

    def _sync_release(self):
        """Drop from ``variables`` (and so from checkpoints and ``.keras`` files) what the selection emptied
        in-graph (``update_paths.SelectedOnlyPath.releases_at_selection``): the layout ``release_warmup_state``
        leaves."""
        selective = self._selective
        if selective is None or selective.variables is None:
            return
        kept_scores = selective.path.emptied_in_graph(selective.scores, selective.criterion_state_variables())
        if kept_scores is not None:
            self._release(kept_scores)

    @property
    def released_bytes(self) -> int:
        """Bytes of N-sized warm-up state released so far (at the selection, or by ``release_warmup_state``)."""
        self._sync_release()
        return self._released_bytes

    @property
    def keep_scores(self) -> bool:
        """Whether the scores stay after the selection where it releases the warm-up state (default False;
        ``SelectionMonitor`` sets it). Read when the step is traced."""
        return self._selective.keep_scores

    @keep_scores.setter
    def keep_scores(self, keep):
        if not isinstance(keep, bool):
            raise ValueError(f"`keep_scores` must be True or False; received {keep!r}.")
        self._selective.keep_scores = keep

    def _released_layout_sizes(self) -> dict:
        """Number of ``variables`` after ``release_warmup_state(keep_scores)``, for each ``keep_scores``."""
        inner = self.inner_optimizer
        slots = sum(len(_compat.state(inner, name) or ()) for name in self._warmup_slot_names())
        window = sum(len(state) for state in self._selective.criterion_state)
        total = len(self.variables) - slots - window
        return {True: total, False: total - len(self._selective.scores)}

    def _take_released_layout(self, count):
        """Release the warm-up state if ``count`` saved arrays are the released layout and this optimizer
        still holds the full one (a file or list saved after the selection, loaded into a fresh optimizer)."""
        if self.built and not self.warmup_state_released and self.update_path == "selected_only":
            if self._selective.config.reselect_every is None and count != len(self.variables):
                for keep_scores, size in self._released_layout_sizes().items():
                    if count == size:
                        self._release(keep_scores)
                        break

    def load_own_variables(self, store):
        """Keras' loading, after releasing the warm-up state when ``store`` holds a released layout. Where the
        saved state cannot load (this optimizer is not built: ``keras.saving.load_model`` builds it only on a
        built model; or its variables do not match the file's), a UserWarning names the fix,
        ``tf_selopt.load_model``, instead of Keras' own "Skipping variable loading"."""
        self._take_released_layout(len(store.keys()))
        if len(store.keys()) != len(self.variables):
            why = "it is not built" if not self.built else f"it has {len(self.variables)} variables"
            warnings.warn(
                f"{self.name}: the saved SelectiveOptimizer state ({len(store.keys())} variables) is not loaded: "
                f"{why}; training on would start over (a new warm-up and selection: frozen entries move). Load "
                "the file with tf_selopt.load_model(path), which compiles, builds the optimizer and loads its "
                "state (keras_hub task models too).",
                StateNotLoadedWarning,
                stacklevel=2,
            )
            return
        super().load_own_variables(store)

    def set_weights(self, weights):
        """``SelectiveFrontEnd.set_weights``; a list with the released layout (``get_weights`` after the
        selection) releases this optimizer's warm-up state first, as ``load_own_variables`` does."""
        weights = list(weights)
        self._take_released_layout(len(weights))
        super().set_weights(weights)

    @property
    def warmup_state_released(self) -> bool:
        """Whether the warm-up state is released (at the selection, or by ``release_warmup_state``; then
        ``scores`` is None unless kept)."""
        self._sync_release()
        return self._selective.path is not None and self._selective.path.released

    @property
    def frozen_layout(self):
        """The selected-only layout (per dtype group, the offsets of the k buffer slots as Python ints) that
        restricted steps traced under XLA are specialized to, or None (``freeze_selected_layout``)."""
        return None if self._selective.path is None else self._selective.path.frozen_layout

    def freeze_selected_layout(self):
        """Specialize the restricted steps traced from now on under XLA to the current selection (eager):
        each variable gathers and scatters exactly its selected entries (``SelectedOnly.freeze_layout``).
        Returns the layout; None, doing nothing, on the masked path or before the first selection. A
        selection thaws it. ``tf_selopt.keras.phases.TracePerPhase`` freezes it for the restricted phase of
        a run without ``reselect_every`` compiled with XLA."""
        path = self._selective.path
        return None if path is None else path.freeze_layout(int(self._selective.selections.numpy()))

    def thaw_selected_layout(self):
        """Undo ``freeze_selected_layout``: restricted steps traced from now on read the layout in-graph."""
        if self._selective.path is not None:
            self._selective.path.thaw_layout()

    def held_selected_layout(self):
        """The current selected-only layout (eager; what ``freeze_selected_layout`` would freeze), or None."""
        return None if self._selective.path is None else self._selective.path.held_layout()
