"""Running LiteRT files: tensor types, full-integer checks, predictions, latency."""

import numpy as np
import pytest

from keras_dynhp import export, litert


def test_int8_file_is_full_integer(trained, fashion_subset, tmp_path):
    (x, _), (xt, _) = fashion_subset
    float_path = export.export_tflite(trained, tmp_path / "float.tflite")
    assert litert.non_integer_tensors(float_path)  # the check can fail
    path = export.export_tflite(
        trained, tmp_path / "int8.tflite", quantization="int8", representative_data=x, batch_size=1
    )
    types = litert.tensor_types(path)
    assert types["input"] == [np.dtype("int8")] and types["output"] == [np.dtype("int8")]
    assert litert.non_integer_tensors(path) == []
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    assert list(inp["shape_signature"]) == [1, 784]  # static shape for the Edge TPU compiler
    assert inp["quantization"][0] > 0
    # the dequantized int8 outputs are probabilities close to the float model's
    probs = litert.predict_tflite(path, xt[:200])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.05)
    assert np.abs(probs - trained.predict(xt[:200], verbose=0)).max() < 0.15


def test_predict_benchmark_and_missing_file(trained, fashion_subset, tmp_path):
    _, (xt, yt) = fashion_subset
    path = export.export_tflite(trained, tmp_path / "m.tflite")
    probs = litert.predict_tflite(path, xt[:50], batch_size=16)  # a last, smaller batch
    np.testing.assert_allclose(probs, trained.predict(xt[:50], verbose=0), atol=1e-5)
    stats = litert.benchmark_tflite(path, xt[:20], runs=20, warmup=2)
    assert stats["runs"] == 20 and stats["median_us"] > 0 and stats["file_bytes"] == (tmp_path / "m.tflite").stat().st_size
    with pytest.raises(FileNotFoundError, match="No such .tflite"):
        litert.load_interpreter(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="runs"):
        litert.benchmark_tflite(path, xt[:2], runs=0)

