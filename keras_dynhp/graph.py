"""Reads a Keras model as a chain with skip connections (for `prune` and the LiteRT export).

A *chain with skips* is what residual networks are: one main path of layers,
each taking the previous one's output, where a tensor may be kept and added
back further on by an `Add`, directly (an identity shortcut, MobileNetV2) or
through a few shortcut layers (a ResNet's strided 1x1 convolution and its
BatchNormalization). :func:`trace_chain` finds which of the two branches
leaving a tensor is the shortcut (the one reaching the `Add` through fewer
layers) and returns the main path as steps. Anything else (a layer used twice,
a third branch, a skip inside a skip, `Concatenate`) is a clear `ValueError`
naming the layer.
"""

import keras


def _node(layer):
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise ValueError(f"Layer '{layer.name}' is used {len(nodes)} times: `prune` supports each layer once.")
    return nodes[0]


def _output(layer):
    outputs = _node(layer).output_tensors
    if len(outputs) != 1:
        raise ValueError(f"Layer '{layer.name}' has {len(outputs)} outputs: `prune` supports one per layer.")
    return outputs[0]


def trace_chain(model):
    """The main path of a one-input, one-output Keras model, with its skip connections.

    Args:
        model: A built `keras.Sequential` or functional model.

    Returns:
        A list of steps: `("layer", layer)` on the main path, `("save", key)`
        right after the main-path tensor a skip starts from, and `("add",
        key, shortcut_layers, add_layer)` where the `Add` joins it back
        (`shortcut_layers`: the layers on the skip, possibly none).

    Raises:
        ValueError: For a model that is not a chain with skips (the message
            names the layer).

    Example:
        >>> inputs = keras.Input((4,))
        >>> h = keras.layers.Dense(4)(inputs)
        >>> out = keras.layers.Add()([h, keras.layers.Dense(4)(h)])
        >>> [step[0] for step in trace_chain(keras.Model(inputs, out))]
        ['layer', 'save', 'layer', 'add']
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return [("layer", layer) for layer in layers]
    consumers = {}
    for layer in layers:
        for tensor in _node(layer).input_tensors:
            consumers.setdefault(id(tensor), []).append(layer)
    if len(consumers.get(id(model.inputs[0]), [])) != 1:
        raise ValueError("The model's input feeds several layers: `prune` supports skip connections that "
                         "start after the first layer.")
    shortcut_of = _shortcuts(layers, consumers)
    steps, saved, pending, main, count = [], {}, {}, model.inputs[0], 0
    for layer in layers:
        node = _node(layer)
        inputs, output = list(node.input_tensors), _output(layer)
        if id(layer) in shortcut_of:  # a layer on a skip: kept with it
            source = inputs[0]
            if len(inputs) != 1 or (id(source) not in saved and id(source) not in pending):
                raise ValueError(f"Layer '{layer.name}' on a skip connection must take one input.")
            key, chain = (saved[id(source)], []) if id(source) in saved else pending.pop(id(source))
            pending[id(output)] = (key, chain + [layer])
            continue
        if isinstance(layer, keras.layers.Add):
            if len(inputs) != 2 or not any(t is main for t in inputs):
                raise ValueError(f"Add '{layer.name}' must join the main path and one skip connection.")
            other = inputs[1] if inputs[0] is main else inputs[0]
            if id(other) in saved:
                key, chain = saved[id(other)], []
            elif id(other) in pending:
                key, chain = pending.pop(id(other))
            else:
                raise ValueError(f"Add '{layer.name}' joins two branches that are not a skip connection.")
            steps.append(("add", key, chain, layer))
        elif len(inputs) != 1 or inputs[0] is not main:
            raise ValueError(
                f"Layer '{layer.name}' does not take the previous layer's output: `prune` supports chains of "
                "layers with residual Add connections (no other branches, no Concatenate).")
        else:
            steps.append(("layer", layer))
        main = output
        if len(consumers.get(id(main), [])) == 2:
            count += 1
            saved[id(main)] = f"skip_{count}"
            steps.append(("save", f"skip_{count}"))
    if main is not model.outputs[0] or pending:
        raise ValueError("The model's output is not the end of its main path: `prune` supports chains of "
                         "layers with residual Add connections.")
    return steps


def _shortcuts(layers, consumers):
    """`{id(layer)}` of the layers on skip connections: of two branches, the fewer layers to their Add."""
    shortcut = set()
    for layer in layers:
        branches = consumers.get(id(_output(layer)), [])
        if len(branches) <= 1:
            continue
        if len(branches) > 2:
            raise ValueError(f"The output of layer '{layer.name}' feeds {len(branches)} layers: `prune` supports "
                             "one skip connection per tensor.")
        paths = [_to_add(start, consumers) for start in branches]
        if any(add is None for _, add in paths) or paths[0][1] is not paths[1][1]:
            raise ValueError(
                f"The two branches after layer '{layer.name}' do not meet in one Add (a skip inside a skip, or "
                "a Concatenate): `prune` supports chains with residual Add connections.")
        (a, _), (b, _) = paths
        if len(a) == len(b) and a:
            raise ValueError(f"The two branches after layer '{layer.name}' are equally long: `prune` cannot tell "
                             "the skip connection from the main path.")
        shortcut.update(id(x) for x in (a if len(a) < len(b) else b))
    return shortcut


def _to_add(start, consumers):
    """The layers from `start` to the first Add along single-consumer links, and that Add (None: no Add)."""
    path, layer = [], start
    while not isinstance(layer, keras.layers.Add):
        path.append(layer)
        nxt = consumers.get(id(_output(layer)), [])
        if len(nxt) != 1:
            return path, None
        layer = nxt[0]
    return path, layer
