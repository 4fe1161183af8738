"""Each paper's new layers give the same numbers on TensorFlow, JAX and PyTorch.

One subprocess per backend builds every layer of ``LAYERS``, loads the same
weights (drawn with NumPy from a seed) and runs it on the same float32 inputs
at inference; the outputs are compared across backends.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

BACKENDS = ("tensorflow", "jax", "torch")

# name: (module, class, constructor arguments, input shapes)
LAYERS = {
    "vit.Patches": ("helpers.papers.vit", "Patches", {"patch_size": 4}, [(2, 12, 12, 3)]),
    "vit.PatchEncoder": ("helpers.papers.vit", "PatchEncoder",
                         {"num_patches": 9, "projection_dim": 8}, [(2, 9, 48)]),
    "augment.RandomPadCrop": ("helpers.harness.augment", "RandomPadCrop",
                              {"pad": 2, "size": 10}, [(2, 12, 12, 3)]),
    "layers.StochasticDepth": ("helpers.papers.layers", "StochasticDepth", {"rate": 0.3}, [(2, 5, 4)]),
    "spt_lsa.ShiftedPatchTokenization": ("helpers.papers.spt_lsa", "ShiftedPatchTokenization",
                                         {"image_size": 12, "patch_size": 4,
                                          "projection_dim": 8}, [(2, 12, 12, 3)]),
    "spt_lsa.LocalitySelfAttention": ("helpers.papers.spt_lsa", "LocalitySelfAttention",
                                      {"num_heads": 2, "key_dim": 4}, [(2, 9, 8), (2, 9, 8)]),
    "perceiver.FourierFeatures": ("helpers.papers.perceiver", "FourierFeatures",
                                  {"grid_size": 4, "num_bands": 3}, [(2, 16, 5)]),
    "perceiver.CrossAttention": ("helpers.papers.perceiver", "CrossAttention",
                                 {"num_heads": 2}, [(2, 4, 8), (2, 16, 6)]),
    "perceiver.LatentTransformerBlock": ("helpers.papers.perceiver", "LatentTransformerBlock",
                                         {"num_heads": 2, "key_dim": 4, "hidden_units": 16},
                                         [(2, 4, 8)]),
    "cct.CCTTokenizer": ("helpers.papers.cct", "CCTTokenizer",
                         {"num_output_channels": [4, 8]}, [(2, 12, 12, 3)]),
    "cct.SequencePooling": ("helpers.papers.cct", "SequencePooling", {}, [(2, 9, 8)]),
    "shiftvit.Shift": ("helpers.papers.shiftvit", "Shift", {"num_div": 4, "shift_pixel": 1},
                       [(2, 5, 6, 8)]),
}

RUN = textwrap.dedent(
    """
    import importlib, json, sys, zlib
    import numpy as np
    from keras import ops

    layers, out = json.loads(sys.argv[1]), sys.argv[2]
    results = {}
    for name, (module, cls, kwargs, shapes) in layers.items():
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        inputs = [rng.normal(size=shape).astype("float32") for shape in shapes]
        layer = getattr(importlib.import_module(module), cls)(**kwargs)
        layer(*inputs, training=False)  # builds the weights
        layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype(w.dtype)
                           for w in layer.get_weights()])
        outputs = layer(*inputs, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for i, value in enumerate(outputs):
            results[f"{name}/{i}"] = ops.convert_to_numpy(value)
    np.savez(out, **results)
    """
)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backends")
    results = {}
    for backend in BACKENDS:
        path = folder / f"{backend}.npz"
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run([sys.executable, "-c", RUN, json.dumps(LAYERS), str(path)],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{backend}: {done.stderr[-3000:]}"
        with np.load(path) as archive:
            results[backend] = dict(archive)
    return results


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_layer_matches_tensorflow(outputs, name, backend):
    keys = [k for k in outputs["tensorflow"] if k.startswith(name + "/")]
    assert keys and keys == [k for k in outputs[backend] if k.startswith(name + "/")]
    for key in keys:
        reference, ours = outputs["tensorflow"][key], outputs[backend][key]
        assert ours.dtype == reference.dtype == np.float32
        # 1e-5 relative to the size of the output, so near-zero entries do not dominate.
        scale = float(np.abs(reference).max()) or 1.0
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * scale, err_msg=key)
