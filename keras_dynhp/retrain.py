"""Re-training a pruned (compact) network on new data, and comparing strategies.

After deployment the compact network (:func:`keras_dynhp.export.strip`) may need
updating on new data, e.g. on the device itself (Chandakkar et al., "Strategies
for Re-Training a Pruned Neural Network in an Edge Computing Paradigm", EDGE
2017). The pruned architecture stays fixed; three strategies are compared:

* `"all"`: fine-tune every layer on the new data;
* `"last"`: fine-tune only the last `num_trainable_last` dense layers (the cheapest
  on a device: no gradients for the earlier layers);
* `"replay"`: fine-tune every layer on the new data mixed with a small replay
  buffer of `replay_size` original examples kept on the device, against
  forgetting the original data.

`"none"` (no re-training) is the baseline. :func:`retrain` never changes the
model it is given: it trains a clone.
"""

import time

import keras
import numpy as np

from keras_dynhp.data import make_dataset
from keras_dynhp.evaluation import accuracy

STRATEGIES = ("none", "all", "last", "replay")


def _compact(model):
    from keras_dynhp.export import check_exportable, strip
    from keras_dynhp.models import DynHPModel

    check_exportable(model)
    return strip(model) if isinstance(model, DynHPModel) else model


def _from_logits(model):
    act = getattr(model.layers[-1], "activation", None)
    return getattr(act, "__name__", None) != "softmax"


def _weighted_layers(model):
    return [layer for layer in model.layers if layer.weights]


def _check_xy(name, x, y, width=None):
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) == 0 or len(x) != len(y) or (width is not None and x.shape[1] != width):
        raise ValueError(
            f"`{name}` must be non-empty arrays x of shape (n, {width if width is not None else 'features'}) "
            f"and y of shape (n,); received shapes {x.shape} and {y.shape}."
        )
    return x.astype("float32", copy=False), y


def clone(model):
    """A copy of a Keras model with the same weights (and no optimizer)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def retrain(
    compact_model,
    x_new,
    y_new,
    strategy="all",
    epochs=3,
    batch_size=32,
    learning_rate=1e-3,
    num_trainable_last=1,
    replay_data=None,
    replay_size=500,
    seed=0,
    verbose=0,
):
    """Fine-tunes a copy of a compact model on new data with one strategy.

    Args:
        compact_model: The compact Keras model (or a trained DynHPModel, stripped
            first). It is not modified.
        x_new: New inputs, shape (n, features).
        y_new: New integer labels.
        strategy: "all", "last", "replay" or "none" (a copy, not re-trained).
        epochs: Passes over the (new + replay) data.
        batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        num_trainable_last: For "last": how many of the last layers with weights
            are trained; the others are frozen.
        replay_data: For "replay": `(x_old, y_old)`, the original data to draw the
            replay buffer from.
        replay_size: For "replay": examples in the replay buffer (at most
            `len(x_old)`), drawn without replacement with `seed`.
        seed: Seed of the replay draw and of the shuffling.
        verbose: Verbosity of Keras's `fit`.

    Returns:
        A new, fine-tuned `keras.Model` (compiled with Adam, sparse categorical
        cross-entropy and accuracy).

    Raises:
        ValueError: For an unknown strategy, "replay" without `replay_data`, bad
            `num_trainable_last` / `replay_size`, or mis-shaped data.

    Example:
        >>> compact = keras_dynhp.export.strip(model)                    # doctest: +SKIP
        >>> tuned = retrain(compact, x_new, y_new, strategy="replay",
        ...                 replay_data=(x_old, y_old), replay_size=500) # doctest: +SKIP
        >>> tuned.evaluate(x_new_test, y_new_test)                        # doctest: +SKIP
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown `strategy`={strategy!r}; expected one of {STRATEGIES}.")
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 0:
        raise ValueError(f"`epochs` must be a non-negative integer; received {epochs!r}.")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")
    base = _compact(compact_model)
    width = base.inputs[0].shape[-1] if getattr(base, "inputs", None) else None
    x, y = _check_xy("x_new/y_new", x_new, y_new, width)
    layers = _weighted_layers(base)
    if strategy == "last" and (
        isinstance(num_trainable_last, bool)
        or int(num_trainable_last) != num_trainable_last
        or not 1 <= num_trainable_last <= len(layers)
    ):
        raise ValueError(
            f"`num_trainable_last` must be an integer in [1, {len(layers)}]; received {num_trainable_last!r}."
        )
    if strategy == "replay":
        if replay_data is None:
            raise ValueError('strategy="replay" needs `replay_data=(x_old, y_old)`, the original data.')
        if not isinstance(replay_data, (tuple, list)) or len(replay_data) != 2:
            raise ValueError("`replay_data` must be a tuple (x_old, y_old).")
        x_old, y_old = _check_xy("replay_data", replay_data[0], replay_data[1], x.shape[1])
        if isinstance(replay_size, bool) or int(replay_size) != replay_size or replay_size < 1:
            raise ValueError(f"`replay_size` must be a positive integer; received {replay_size!r}.")
        idx = np.random.default_rng(seed).choice(len(x_old), min(int(replay_size), len(x_old)), replace=False)
        x = np.concatenate([x, x_old[idx]])
        y = np.concatenate([y, y_old[idx]])

    model = clone(base)
    if strategy == "last":
        keep = _weighted_layers(model)[-int(num_trainable_last) :]
        for layer in _weighted_layers(model):
            layer.trainable = any(layer is k for k in keep)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=_from_logits(model)),
        metrics=["accuracy"],
    )
    if strategy != "none" and epochs > 0:
        data = make_dataset(x, np.asarray(y), int(batch_size), shuffle=True, seed=seed)
        model.fit(data, epochs=int(epochs), verbose=verbose, shuffle=False)  # the dataset shuffles
    return model


def compare_strategies(
    compact_model,
    new,
    new_test,
    original_test,
    strategies=STRATEGIES,
    **kwargs,
):
    """Re-trains a compact model with several strategies and scores each.

    Args:
        compact_model: The compact Keras model (or a trained DynHPModel).
        new: `(x, y)`: the new training data.
        new_test: `(x, y)`: held-out new data.
        original_test: `(x, y)`: held-out original data (to measure forgetting).
        strategies: Strategies to run, from "none", "all", "last", "replay".
        **kwargs: Passed to :func:`retrain` (`epochs`, `batch_size`,
            `learning_rate`, `num_trainable_last`, `replay_data`, `replay_size`,
            `seed`, `verbose`).

    Returns:
        A list of dicts, one per strategy, in order: `strategy`, `new_accuracy`,
        `original_accuracy` (in [0, 1]), `seconds` (re-training wall time) and
        `trainable_params`.

    Raises:
        ValueError: For an unknown strategy or the errors of :func:`retrain`.

    Example:
        >>> rows = compare_strategies(compact, (x_new, y_new), (xt_new, yt_new),
        ...                           (xt_old, yt_old), replay_data=(x_old, y_old),
        ...                           epochs=3)                           # doctest: +SKIP
        >>> [(r["strategy"], round(r["new_accuracy"], 3)) for r in rows]   # doctest: +SKIP
    """
    strategies = list(strategies)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"Unknown strategies {unknown}; expected a non-empty subset of {STRATEGIES}.")
    if "replay" in strategies and kwargs.get("replay_data") is None:
        raise ValueError('strategy "replay" needs `replay_data=(x_old, y_old)`, the original data.')
    for name, pair in (("new", new), ("new_test", new_test), ("original_test", original_test)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"`{name}` must be a tuple (x, y).")
    rows = []
    for strategy in strategies:
        start = time.perf_counter()
        model = retrain(compact_model, new[0], new[1], strategy=strategy, **kwargs)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "strategy": strategy,
                "new_accuracy": accuracy(model, *new_test),
                "original_accuracy": accuracy(model, *original_test),
                "seconds": seconds,
                "trainable_params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
                if strategy != "none"
                else 0,
            }
        )
    return rows


def format_table(rows):
    """A Markdown table of :func:`compare_strategies` rows."""
    lines = [
        "| strategy | new-data accuracy % | original-data accuracy % | trainable params | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {100 * r['new_accuracy']:.2f} | {100 * r['original_accuracy']:.2f} | "
            f"{r['trainable_params']:,} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)
