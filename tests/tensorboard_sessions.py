"""Reading TensorBoard HParams sessions back, as TensorBoard does (for the tests)."""

import glob

import tensorflow as tf
from tensorboard.plugins.hparams import metadata


def read_session(log_dir):
    """(hparams {name: value}, scalars {tag: value}) from the event files directly in `log_dir`."""
    hparams, scalars = {}, {}
    for path in sorted(glob.glob(f"{log_dir}/events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data
                if plugin.plugin_name == metadata.PLUGIN_NAME and value.tag == metadata.SESSION_START_INFO_TAG:
                    info = metadata.parse_session_start_info_plugin_data(plugin.content)
                    for name, v in info.hparams.items():
                        kind = v.WhichOneof("kind")
                        hparams[name] = getattr(v, kind)
                elif value.HasField("tensor"):
                    scalars[value.tag] = float(tf.make_ndarray(value.tensor))
    return hparams, scalars
