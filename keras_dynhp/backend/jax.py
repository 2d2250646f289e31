"""DynHP's train step on the JAX backend: `jax.value_and_grad` over weights and probes.

It mirrors Keras's own `JAXTrainer.train_step` (a stateless step on
`(trainable, non_trainable, optimizer, metrics)` variables), differentiating
with respect to the zero-valued pre-activation probes as well.
"""

import jax
import jax.numpy as jnp
import keras


class VarianceTrainStep:
    """Mixin of :class:`~keras_dynhp.models.DynHPModel` for the JAX backend (see the TF one)."""

    def __setattr__(self, name, value):
        # Keras's JAX `fit` stores the state after every step as `self._jax_state`, a
        # dict of lists of arrays; `Layer.__setattr__` walks it through the variable
        # tracker each time: at batch 16 on Fashion-MNIST about 0.1 ms a step for SP and
        # 0.5 ms for DynHP (10-35 % of an epoch, best of 3). It
        # holds arrays only, nothing to track (tests/test_keras_internals.py).
        if name == "_jax_state":
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    def train_step(self, state, data):
        if self._variance_every is None:
            return super().train_step(state, data)
        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = x.shape[0]
        probes = [jnp.zeros((batch,) + tuple(layer.preactivation_shape), "float32")
                  for layer in self.gated_layers]

        def loss_fn(trainable, probes):
            (y_pred, gated), new_non_trainable, losses = self.stateless_call(
                trainable, non_trainable, x, return_losses=True, training=True, probes=probes)
            # As Keras's JAX trainer does: the forward pass's layer losses (the L0
            # penalty) enter compute_loss through `_losses_override`.
            if losses:
                self._losses_override.clear()
                self._losses_override = losses
            loss, (_, new_non_trainable, new_metrics) = self.stateless_compute_loss(
                trainable, new_non_trainable, metrics_vars, x=x, y=y, y_pred=y_pred,
                sample_weight=sample_weight, training=True)
            if losses:
                self._losses_override.clear()
            penalty = sum(losses) if losses else 0.0
            return loss, (y_pred, gated, new_non_trainable, new_metrics, penalty)

        (loss, aux), (grads, probe_grads) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            trainable, probes)
        y_pred, gated, non_trainable, metrics_vars, penalty = aux
        trainable, optimizer_vars = self.optimizer.stateless_apply(optimizer_vars, grads, trainable)
        mapping = list(zip(self.metrics_variables, metrics_vars))
        mapping += list(zip(self.optimizer.variables, optimizer_vars))  # the step count, for every-k
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self.record_step(x, y, y_pred, sample_weight, loss, penalty, gated, probe_grads)
        metrics_vars = [
            scope.get_current_value(v) if scope.get_current_value(v) is not None else v.value
            for v in self.metrics_variables
        ]
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)
