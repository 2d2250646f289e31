"""DynHP's train step on the TensorFlow backend: `tf.GradientTape` over weights and probes."""

import keras
import tensorflow as tf
from keras import ops


class VarianceTrainStep:
    """Mixin of :class:`~keras_dynhp.models.DynHPModel` for the TensorFlow backend.

    With `_variance_every` None it is Keras's own train step; otherwise one
    step also yields each gated layer's inputs and the gradient of the loss
    with respect to its pre-activations, from which the model records ||S||_1
    and F (:meth:`DynHPModel.record_step`).
    """

    def train_step(self, data):
        if self._variance_every is None:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = ops.shape(x)[0]
        probes = [tf.zeros(tf.concat([[batch], list(layer.preactivation_shape)], 0))
                  for layer in self.gated_layers]
        with tf.GradientTape() as tape:
            tape.watch(probes)
            y_pred, gated = self(x, training=True, probes=probes)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            penalty = ops.sum(ops.stack(self.losses)) if self.losses else 0.0
        variables = self.trainable_weights
        grads = tape.gradient(loss, variables + probes)
        self.optimizer.apply_gradients(zip(grads[: len(variables)], variables))
        return self.record_step(x, y, y_pred, sample_weight, loss, penalty, gated, grads[len(variables):])
