"""On-device re-training: a LiteRT (TFLite) file with `train`, `infer`, `save` and `restore`.

:func:`export_trainable_tflite` writes the compact (gate-free) network as a `.tflite`
file whose weights are resource variables and whose signatures follow TensorFlow's
on-device training pattern:

* `train(x, y) -> {"loss"}`: one optimizer step on a batch (float inputs, int32 labels);
* `infer(x) -> {"output"}`: the model's output with the current weights;
* `save(...)` and `restore(...)`: see *Checkpoints* below.

:class:`TFLiteTrainer` drives such a file from Python with the `ai-edge-litert`
interpreter; an app does the same with the LiteRT signature runners on the device.

Checkpoints. TensorFlow's example saves with `tf.raw_ops.Save` / `tf.raw_ops.Restore`,
which are TensorFlow ops run by the Flex (select TF ops) delegate. Neither
`ai-edge-litert` 2.3 nor TensorFlow 2.21's `tf.lite.Interpreter` ships that delegate
(a model with Flex ops fails with "Select TensorFlow op(s) ... not supported by this
interpreter"), so the default, `checkpoint="tensors"`, uses builtin ops only:

* `save() -> {"kernel_0": ..., "bias_0": ..., ...}` returns the weights as tensors,
  for the app to store however it likes (`TFLiteTrainer.save` writes a `.npz`);
* `restore(kernel_0=..., bias_0=..., ...) -> {"restored"}` assigns them back.

`checkpoint="file"` gives TensorFlow's variant instead,
`save(checkpoint_path) -> {"checkpoint_path"}` and
`restore(checkpoint_path) -> {"kernel_0", ...}`, for runtimes that link the Flex
delegate (e.g. Android with `tensorflow-lite-select-tf-ops`). It cannot run in this
project's Python environment; `train` and `infer` stay builtin-only in both variants.

The training graph is written so that its gradients are LiteRT builtins: the
activations and the softmax cross-entropy carry explicit gradients (TensorFlow's own
`ReluGrad` / `BroadcastGradientArgs` are not builtins). Supported networks are
chains of :class:`~keras_dynhp.layers.FeatureSelect` (optional, first) and
`keras.layers.Dense` layers with `relu`, `tanh`, `sigmoid` or `linear` hidden
activations and a `softmax` or `linear` (logits) output: what
:func:`keras_dynhp.export.strip` produces, and plain dense MLPs.
"""

import os

import numpy as np

from keras_dynhp.export import convert_saved_model, dense_stack
from keras_dynhp.litert import load_interpreter

OPTIMIZERS = ("sgd", "adam")
CHECKPOINT_MODES = ("tensors", "file")
def _make_module(stack, learning_rate, optimizer, momentum, num_trainable_last, checkpoint):
    import tensorflow as tf

    @tf.custom_gradient
    def relu(h):
        y = tf.nn.relu(h)

        def grad(dy):
            return dy * tf.cast(y > 0.0, dy.dtype)

        return y, grad

    @tf.custom_gradient
    def tanh(h):
        y = tf.tanh(h)

        def grad(dy):
            return dy * (1.0 - y * y)

        return y, grad

    @tf.custom_gradient
    def sigmoid(h):
        y = tf.sigmoid(h)

        def grad(dy):
            return dy * y * (1.0 - y)

        return y, grad

    hidden = {"relu": relu, "tanh": tanh, "sigmoid": sigmoid, "linear": lambda h: h}

    @tf.custom_gradient
    def softmax_cross_entropy(logits, onehot):
        """Mean cross-entropy of softmax(logits); d/dlogits = (softmax - onehot) / n."""
        log_probs = tf.nn.log_softmax(logits)
        n = tf.cast(tf.shape(logits)[0], logits.dtype)
        loss = -tf.reduce_sum(onehot * log_probs) / n

        def grad(dloss):
            return dloss * (tf.exp(log_probs) - onehot) / n, tf.zeros_like(onehot)

        return loss, grad

    input_dim = stack["input_dim"]
    num_classes = stack["layers"][-1][0].shape[1]
    output_activation = stack["layers"][-1][2]
    n_layers = len(stack["layers"])
    first_trainable = 0 if num_trainable_last is None else n_layers - num_trainable_last

    class TrainingModule(tf.Module):
        def __init__(self):
            super().__init__(name="keras_dynhp_trainable")
            self.indices = None if stack["indices"] is None else tf.constant(stack["indices"], tf.int32)
            self.names, self.weights, self.trainable = [], [], []
            for i, (kernel, bias, _) in enumerate(stack["layers"]):
                for kind, value in (("kernel", kernel), ("bias", bias)):
                    if value is None:
                        continue
                    var = tf.Variable(value, name=f"{kind}_{i}", dtype=tf.float32)
                    self.names.append(f"{kind}_{i}")
                    self.weights.append(var)
                    if i >= first_trainable:
                        self.trainable.append(var)
            self.layer_vars = []
            it = iter(self.weights)
            for kernel, bias, act in stack["layers"]:
                self.layer_vars.append((next(it), None if bias is None else next(it), act))
            if optimizer == "adam":
                self.step = tf.Variable(0.0, name="adam_step")
                self.m = [
                    tf.Variable(tf.zeros_like(v), name=f"adam_m_{k}") for k, v in enumerate(self.trainable)
                ]
                self.v = [
                    tf.Variable(tf.zeros_like(v), name=f"adam_v_{k}") for k, v in enumerate(self.trainable)
                ]
            elif momentum:
                self.velocity = [
                    tf.Variable(tf.zeros_like(v), name=f"velocity_{k}") for k, v in enumerate(self.trainable)
                ]

        def logits_and_output(self, x):
            h = x if self.indices is None else tf.gather(x, self.indices, axis=1)
            for i, (kernel, bias, act) in enumerate(self.layer_vars):
                h = tf.matmul(h, kernel)
                if bias is not None:
                    h = tf.nn.bias_add(h, bias)
                if i + 1 < n_layers:
                    h = hidden[act](h)
            output = tf.nn.softmax(h) if output_activation == "softmax" else h
            return h, output

        def apply(self, grads):
            if optimizer == "sgd":
                for k, (var, g) in enumerate(zip(self.trainable, grads)):
                    if momentum:
                        vel = self.velocity[k]
                        vel.assign(momentum * vel - learning_rate * g)
                        var.assign_add(vel)
                    else:
                        var.assign_sub(learning_rate * g)
                return
            beta_1, beta_2, eps = 0.9, 0.999, 1e-7  # keras.optimizers.Adam defaults
            self.step.assign_add(1.0)
            t = self.step.read_value()
            lr = learning_rate * tf.sqrt(1.0 - tf.pow(beta_2, t)) / (1.0 - tf.pow(beta_1, t))
            for var, g, m, v in zip(self.trainable, grads, self.m, self.v):
                m.assign(beta_1 * m + (1.0 - beta_1) * g)
                v.assign(beta_2 * v + (1.0 - beta_2) * g * g)
                var.assign_sub(lr * m / (tf.sqrt(v) + eps))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, input_dim], tf.float32, name="x"),
                tf.TensorSpec([None], tf.int32, name="y"),
            ]
        )
        def train(self, x, y):
            onehot = tf.one_hot(y, num_classes, dtype=tf.float32)
            with tf.GradientTape() as tape:
                logits, _ = self.logits_and_output(x)
                loss = softmax_cross_entropy(logits, onehot)
            self.apply(tape.gradient(loss, self.trainable))
            return {"loss": loss}

        @tf.function(input_signature=[tf.TensorSpec([None, input_dim], tf.float32, name="x")])
        def infer(self, x):
            return {"output": self.logits_and_output(x)[1]}

    module = TrainingModule()
    if checkpoint == "tensors":

        @tf.function(input_signature=[])
        def save():
            return {name: var.read_value() for name, var in zip(module.names, module.weights)}

        @tf.function(
            input_signature=[
                tf.TensorSpec(var.shape, tf.float32, name=name)
                for name, var in zip(module.names, module.weights)
            ]
        )
        def restore(*values):
            for var, value in zip(module.weights, values):
                var.assign(value)
            return {"restored": tf.constant(len(values), tf.int32)}

    else:

        @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="checkpoint_path")])
        def save(checkpoint_path):
            tf.raw_ops.Save(
                filename=checkpoint_path,
                tensor_names=module.names,
                data=[var.read_value() for var in module.weights],
                name="save",
            )
            return {"checkpoint_path": checkpoint_path}

        @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="checkpoint_path")])
        def restore(checkpoint_path):
            restored = {}
            for name, var in zip(module.names, module.weights):
                value = tf.raw_ops.Restore(file_pattern=checkpoint_path, tensor_name=name, dt=tf.float32)
                var.assign(value)
                restored[name] = value
            return restored

    module.save = save
    module.restore = restore
    return module


def export_trainable_tflite(
    model,
    path,
    learning_rate=0.01,
    optimizer="sgd",
    momentum=0.0,
    num_trainable_last=None,
    checkpoint="tensors",
):
    """Writes a `.tflite` file that can re-train itself on the device.

    The network is the compact, gate-free one (a DynHPModel is stripped first);
    only the float32 variant is trainable. Labels are integer class ids and the
    loss is the mean softmax cross-entropy.

    Args:
        model: A trained :class:`~keras_dynhp.models.DynHPModel` or a compact Keras
            model (optional `FeatureSelect` then `Dense` layers, e.g. the output of
            :func:`keras_dynhp.export.strip`).
        path: Output `.tflite` path.
        learning_rate: Step size of the on-device optimizer.
        optimizer: "sgd" (with optional `momentum`) or "adam" (Keras's default
            betas and epsilon); the optimizer state lives in the file's variables.
        momentum: SGD momentum in [0, 1).
        num_trainable_last: Train only the last this many dense layers (None: all).
        checkpoint: "tensors" (builtin ops only: `save()` returns the weights and
            `restore(...)` takes them) or "file" (`tf.raw_ops.Save/Restore` on a
            checkpoint path; needs the Flex delegate at run time, see the module
            docstring).

    Returns:
        The path written.

    Raises:
        ValueError: For an untrained or unsupported model, or bad arguments.

    Example:
        >>> path = export_trainable_tflite(model, "model_train.tflite")   # doctest: +SKIP
        >>> trainer = TFLiteTrainer(path)                                  # doctest: +SKIP
        >>> trainer.train(x_batch, y_batch)                                # doctest: +SKIP
        0.4213
    """
    import tensorflow as tf

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}; received {optimizer!r}.")
    if checkpoint not in CHECKPOINT_MODES:
        raise ValueError(f"`checkpoint` must be one of {CHECKPOINT_MODES}; received {checkpoint!r}.")
    if not float(learning_rate) > 0.0:
        raise ValueError(f"`learning_rate` must be > 0; received {learning_rate!r}.")
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"`momentum` must be in [0, 1); received {momentum!r}.")
    if optimizer == "adam" and momentum:
        raise ValueError("`momentum` applies to optimizer='sgd' only.")
    stack = dense_stack(model)
    n_layers = len(stack["layers"])
    if num_trainable_last is not None:
        if (
            isinstance(num_trainable_last, bool)
            or int(num_trainable_last) != num_trainable_last
            or not 1 <= num_trainable_last <= n_layers
        ):
            raise ValueError(
                f"`num_trainable_last` must be an integer in [1, {n_layers}] or None; "
                f"received {num_trainable_last!r}."
            )
        num_trainable_last = int(num_trainable_last)
    module = _make_module(
        stack, float(learning_rate), optimizer, float(momentum), num_trainable_last, checkpoint
    )

    def save(directory):
        tf.saved_model.save(module, directory, signatures={
            name: getattr(module, name).get_concrete_function()
            for name in ("train", "infer", "save", "restore")
        })

    def configure(converter):
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if checkpoint == "file":
            converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        converter.experimental_enable_resource_variables = True

    return convert_saved_model(save, path, configure)


class TFLiteTrainer:
    """Drives a file from :func:`export_trainable_tflite` with the LiteRT interpreter.

    The four signature runners share one interpreter, hence the same weights: a
    `train` step changes what `infer` returns.

    Args:
        path: The trainable `.tflite` file.
        num_threads: Interpreter threads.

    Example:
        >>> trainer = TFLiteTrainer("model_train.tflite")          # doctest: +SKIP
        >>> losses = [trainer.train(xb, yb) for xb, yb in batches] # doctest: +SKIP
        >>> trainer.save("weights.npz")                             # doctest: +SKIP
        >>> probs = trainer.infer(x_test)                           # doctest: +SKIP
    """

    def __init__(self, path, num_threads=1):
        self.path = os.fspath(path)
        self.interpreter = load_interpreter(self.path, num_threads)
        signatures = self.interpreter.get_signature_list()
        missing = [s for s in ("train", "infer", "save", "restore") if s not in signatures]
        if missing:
            raise ValueError(
                f"{self.path!r} is not a trainable .tflite file (no {', '.join(missing)} signature); "
                "write one with keras_dynhp.ondevice.export_trainable_tflite."
            )
        self.checkpoint = "file" if "checkpoint_path" in signatures["save"]["inputs"] else "tensors"
        self._runners = {}

    def signature_runner(self, name):
        """The LiteRT signature runner of `name` ("train", "infer", "save" or "restore")."""
        if name not in self._runners:
            self._runners[name] = self.interpreter.get_signature_runner(name)
        return self._runners[name]

    def _call(self, name, **inputs):
        try:
            return self.signature_runner(name)(**inputs)
        except RuntimeError as e:
            if "Select TensorFlow op" in str(e):
                raise RuntimeError(
                    f"The '{name}' signature of {self.path!r} uses TensorFlow (Flex) ops, which this "
                    "interpreter cannot run: export with checkpoint='tensors' (the default) or run the "
                    "file on a runtime that links the Flex delegate."
                ) from None
            raise

    def train(self, x, y):
        """One optimizer step on a batch; returns the batch loss (before the step)."""
        x = np.asarray(x, "float32")
        y = np.asarray(y).astype("int32").reshape(-1)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"`x` and `y` must be non-empty and of one length; received {len(x)} and {len(y)}."
            )
        return float(self._call("train", x=x, y=y)["loss"])

    def fit(self, x, y, epochs=1, batch_size=32, seed=None):
        """Mini-batch training over arrays; returns the mean batch loss of each epoch."""
        x = np.asarray(x, "float32")
        y = np.asarray(y)
        rng = np.random.default_rng(seed)
        history = []
        for _ in range(int(epochs)):
            order = rng.permutation(len(x))
            losses = [
                self.train(x[order[i : i + batch_size]], y[order[i : i + batch_size]])
                for i in range(0, len(x), batch_size)
            ]
            history.append(float(np.mean(losses)))
        return history

    def infer(self, x):
        """The model's output (class probabilities for a softmax model) for `x`."""
        return self._call("infer", x=np.asarray(x, "float32"))["output"]

    def get_weights(self):
        """The current weights, ordered like the compact Keras model's `get_weights()`."""
        if self.checkpoint != "tensors":
            raise ValueError("get_weights() needs a file exported with checkpoint='tensors'.")
        out = self._call("save")
        return [out[name] for name in self._weight_names()]

    def _weight_names(self):
        names = self.interpreter.get_signature_list()["restore"]["inputs"]
        if self.checkpoint == "file":
            names = self.interpreter.get_signature_list()["restore"]["outputs"]

        def order(name):
            kind, i = name.rsplit("_", 1)
            return int(i), kind != "kernel"

        return sorted(names, key=order)

    def save(self, path):
        """Saves the weights: a `.npz` file (checkpoint="tensors") or a TF checkpoint ("file")."""
        path = os.fspath(path)
        if self.checkpoint == "file":
            self._call("save", checkpoint_path=np.array(path.encode()))
            return path
        out = self._call("save")
        with open(path, "wb") as f:  # a file object keeps np.savez from appending ".npz"
            np.savez(f, **{name: np.asarray(value) for name, value in out.items()})
        return path

    def restore(self, path):
        """Restores weights written by :meth:`save`."""
        path = os.fspath(path)
        if not os.path.exists(path) and self.checkpoint == "tensors":
            raise FileNotFoundError(f"No such checkpoint: {path!r}.")
        if self.checkpoint == "file":
            self._call("restore", checkpoint_path=np.array(path.encode()))
            return
        with np.load(path) as data:
            names = self._weight_names()
            missing = [n for n in names if n not in data.files]
            if missing:
                raise ValueError(f"{path!r} lacks weights {missing}; was it saved from another model?")
            self._call("restore", **{n: np.asarray(data[n], "float32") for n in names})
