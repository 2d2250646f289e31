"""Re-training a pruned network on new data: strategies in Keras, then on the LiteRT file itself.

    python examples/retrain_demo.py --epochs 3 --output runs/retrain

1. "Original" model: a DynHPModel (mode="hp") trained on Fashion-MNIST classes 0-7,
   then stripped to its compact, gate-free form.
2. "New data": `--new-samples` training images of classes 8-9 (never seen); the new
   test set is the test images of classes 8-9, the original one those of 0-7.
3. `keras_dynhp.retrain.compare_strategies`: no re-training, fine-tune all layers,
   only the last layer, all layers with a small replay buffer of original images.
4. On-device: the compact model as a trainable `.tflite` (train/infer/save/restore
   signatures) driven with the LiteRT interpreter through a few `train` steps on new
   data mixed with the same replay buffer; its loss on the new test images falls.
"""

import argparse
import os
import time

import keras
import numpy as np

import keras_dynhp
from keras_dynhp import export, ondevice, retrain
from keras_dynhp.experiments.datasets import load_data

ORIGINAL_CLASSES = list(range(8))
NEW_CLASSES = [8, 9]


def cross_entropy(probs, y):
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)).mean())


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the original DynHP (hp) training")
    parser.add_argument("--retrain-epochs", type=int, default=3, help="epochs of each re-training strategy")
    parser.add_argument("--new-samples", type=int, default=1000, help="new (class 8-9) training images")
    parser.add_argument("--replay-size", type=int, default=500, help="original images in the replay buffer")
    parser.add_argument("--num-trainable-last", type=int, default=1, help='layers trained by "last"')
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam rate of the strategies")
    parser.add_argument("--device-steps", type=int, default=30, help="on-device train steps (batch 32)")
    parser.add_argument("--device-learning-rate", type=float, default=0.05, help="on-device SGD rate")
    parser.add_argument("--output", default="runs/retrain")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("epochs", "retrain_epochs", "new_samples", "replay_size", "device_steps", "num_trainable_last"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    os.makedirs(args.output, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    (x, y), (xt, yt) = load_data("fashion_mnist")
    old, old_t = np.isin(y, ORIGINAL_CLASSES), np.isin(yt, ORIGINAL_CLASSES)
    x_old, y_old = x[old], y[old]
    new_idx = rng.permutation(np.flatnonzero(~old))[: args.new_samples]
    new = (x[new_idx], y[new_idx])
    new_test = (xt[~old_t], yt[~old_t])
    original_test = (xt[old_t], yt[old_t])

    model = keras_dynhp.build_mlp(
        [300, 100], seed=args.seed, l0_lambda=[0.05, 0.05, 0.5], droprate_init=0.7, learning_rate=3e-3
    )
    dense_params = model.count_params_stored()  # before any pruning
    start = time.perf_counter()
    model.fit(x_old, y_old, epochs=args.epochs, batch_size=64, mode="hp", seed=args.seed, verbose=0)
    print(
        f"original model: classes 0-7, {len(x_old):,} images, {args.epochs} hp epochs in "
        f"{time.perf_counter() - start:.0f} s; architecture {model.architecture()} "
        f"({model.count_params_stored():,} of {dense_params:,} parameters)"
    )
    compact = export.strip(model)

    rows = retrain.compare_strategies(
        compact,
        new,
        new_test,
        original_test,
        epochs=args.retrain_epochs,
        batch_size=32,
        learning_rate=args.learning_rate,
        num_trainable_last=args.num_trainable_last,
        replay_data=(x_old, y_old),
        replay_size=args.replay_size,
        seed=args.seed,
    )
    print(
        f"\nRe-training the compact model on {len(new[0]):,} images of classes 8-9 "
        f"({args.retrain_epochs} epochs, Adam {args.learning_rate:g}, replay buffer {args.replay_size}); "
        f"new = test classes 8-9 ({len(new_test[0]):,}), original = test classes 0-7 "
        f"({len(original_test[0]):,})"
    )
    print(retrain.format_table(rows))

    # On the device: the trainable LiteRT file, new data mixed with the replay buffer.
    path = ondevice.export_trainable_tflite(
        compact,
        os.path.join(args.output, "compact_train.tflite"),
        learning_rate=args.device_learning_rate,
        optimizer="sgd",
    )
    trainer = ondevice.TFLiteTrainer(path)
    replay = rng.choice(len(x_old), args.replay_size, replace=False)
    x_mix = np.concatenate([new[0], x_old[replay]])
    y_mix = np.concatenate([new[1], y_old[replay]])

    def report(label):
        p_new, p_old = trainer.infer(new_test[0]), trainer.infer(original_test[0])
        print(
            f"{label}: new-test loss {cross_entropy(p_new, new_test[1]):.3f}, accuracy new "
            f"{100 * (p_new.argmax(1) == new_test[1]).mean():.2f}% / original "
            f"{100 * (p_old.argmax(1) == original_test[1]).mean():.2f}%"
        )

    print(
        f"\nOn-device re-training through the LiteRT interpreter ({os.path.basename(path)}, "
        f"{os.path.getsize(path):,} bytes, SGD {args.device_learning_rate:g}, batch 32, new + replay data)"
    )
    report("before")
    losses, order = [], rng.permutation(len(x_mix))
    start = time.perf_counter()
    for step in range(args.device_steps):
        batch = order[(step * 32) % len(order) :][:32]
        losses.append(trainer.train(x_mix[batch], y_mix[batch]))
    seconds = time.perf_counter() - start
    every = max(1, len(losses) // 10)
    shown = ", ".join(f"{i}: {losses[i]:.3f}" for i in range(0, len(losses), every))
    print(
        f"train-step losses (step: loss): {shown}, {len(losses) - 1}: {losses[-1]:.3f}  "
        f"[{1000 * seconds / len(losses):.1f} ms/step]"
    )
    report("after ")
    ckpt = trainer.save(os.path.join(args.output, "compact_weights.npz"))
    print(f"weights saved with the save signature to {ckpt}; restore with TFLiteTrainer.restore")


if __name__ == "__main__":
    main()
