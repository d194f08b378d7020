"""One MixedEdge and its forward + backward in training mode, as one tf.function.

Shared by `edge_speed.py` (times it) and `graph_probe.py` (counts its graph).
"""


def edge_and_step(channels, stride, batch, image_size, mixing="attention"):
    """(x, fwd_bwd): a random input and the step returning dL/dx and dL/dkernel, L = sum of the edge output."""
    import tensorflow as tf

    from asmnas_tf.layers.mixed_edge import MixedEdge

    edge = MixedEdge(channels, stride, mixing=mixing)
    x = tf.random.normal((batch, image_size, image_size, channels))
    edge(x)

    @tf.function
    def fwd_bwd(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            mixed, _ = edge(x, training=True)
            loss = tf.reduce_sum(mixed)
        return tape.gradient(loss, [x, edge.kernel])

    return x, fwd_bwd
