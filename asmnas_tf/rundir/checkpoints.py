"""The saved training states of a run: written whole, verified, several kept.

A state is `state-eEEEE-sSSSSSS.weights.h5` (`model.save_weights`: weights,
optimizer slots and step count, BatchNorm statistics) and its manifest
`state-eEEEE-sSSSSSS.json` (epoch, step, file name, size, SHA-256), both
written atomically; `latest.json` is a copy of the newest manifest, written
last. The newest `keep_states` states stay on disk, so that a state spoilt
after it was written (a truncated copy, a bad disk) has a fallback, as
TensorFlow's BackupAndRestore and Orbax keep several.

Reading checks each candidate, newest first (latest.json's, then every
manifest on disk): the file's size and checksum, then that Keras loads it.
A bad one is named in a line and the next is tried; if none is good the run
stops with one line saying what was found and how to start over. A failed
write (a full disk, a permission lost) leaves the previous states and the
pointer as they were, and names the file it could not write.
"""

import hashlib
import json
import os
import re

import gin

from asmnas_tf.errors import UserError
from asmnas_tf.rundir.atomic_write import write_file_atomic, write_text_atomic

STATE_FILE = "latest.json"  # the newest state's manifest: written last, atomically
_STATE_NAME = re.compile(r"^state-e(\d{4,})-s(\d{6,})\.json$")
_WEIGHTS_SUFFIX = ".weights.h5"
_HASH_CHUNK = 1 << 20


class CheckpointError(UserError):
    """No usable saved state, or one that could not be written; the message is one line."""


@gin.configurable("checkpoints")
def keep_states(keep=2):
    """How many saved states stay on disk (>= 1); the newest is resumed, the others are fallbacks."""
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise UserError(f"checkpoints.keep={keep!r}: expected an integer >= 1")
    return keep


def _stem(epoch, step):
    return f"state-e{epoch:04d}-s{step:06d}"


def file_digest(path):
    """(size in bytes, SHA-256 hex) of the file at `path`."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def save_state(model, checkpoint_dir, epoch, step, keep=None):
    """Weights, then their manifest, then the pointer (each atomic), then the states beyond `keep` go.

    A kill at any point leaves the previous states complete and pointed to;
    a write that fails raises CheckpointError naming the file, with nothing
    of the previous states touched.
    """
    keep = keep_states() if keep is None else keep
    stem = _stem(epoch, step)
    weights = os.path.join(checkpoint_dir, stem + _WEIGHTS_SUFFIX)
    target = checkpoint_dir
    try:
        os.makedirs(checkpoint_dir, exist_ok=True)
        target = weights
        write_file_atomic(weights, model.save_weights, suffix=_WEIGHTS_SUFFIX)
        size, sha256 = file_digest(weights)
        manifest = json.dumps({"epoch": epoch, "step": step, "weights": stem + _WEIGHTS_SUFFIX,
                               "size": size, "sha256": sha256}) + "\n"
        target = os.path.join(checkpoint_dir, stem + ".json")
        write_text_atomic(target, manifest)
        target = os.path.join(checkpoint_dir, STATE_FILE)
        write_text_atomic(target, manifest)
    except OSError as error:
        _discard_partial(checkpoint_dir, stem)
        previous = _newest_description(checkpoint_dir)
        raise CheckpointError(
            f"could not write {target} ({error.strerror or error}); {previous}; free space or fix the "
            f"folder's permissions, then run the same command again to resume"
        ) from None
    _prune(checkpoint_dir, keep)


def _discard_partial(checkpoint_dir, stem):
    """A state whose writing failed is removed unless latest.json already points to it."""
    if _pointer(checkpoint_dir).get("weights") == stem + _WEIGHTS_SUFFIX:
        return
    for name in (stem + _WEIGHTS_SUFFIX, stem + ".json"):
        try:
            os.remove(os.path.join(checkpoint_dir, name))
        except OSError:
            pass


def _newest_description(checkpoint_dir):
    manifest = _pointer(checkpoint_dir)
    if "epoch" in manifest:
        return (f"the previous state (epoch {manifest['epoch']}, step {manifest['step']}) in "
                f"{checkpoint_dir} is intact")
    return "no state had been saved before"


def _manifests_on_disk(checkpoint_dir):
    """Manifest names of the states in `checkpoint_dir`, newest first."""
    try:
        names = os.listdir(checkpoint_dir)
    except OSError:
        return []
    found = [(int(m.group(1)), int(m.group(2)), name) for name in names if (m := _STATE_NAME.match(name))]
    return [name for _, _, name in sorted(found, reverse=True)]


def _prune(checkpoint_dir, keep):
    kept = _manifests_on_disk(checkpoint_dir)[:keep]
    kept_stems = {name[:-len(".json")] for name in kept}
    for name in os.listdir(checkpoint_dir):
        if name.startswith("state-") and not any(name.startswith(stem + ".") for stem in kept_stems):
            try:
                os.remove(os.path.join(checkpoint_dir, name))
            except OSError:
                pass


def _read_json(path):
    """(dict, None) or (None, why it cannot be used)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as error:
        return None, f"cannot be read: {error.strerror or error}"
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"is corrupt: {str(error).splitlines()[0][:120]}"
    if not isinstance(data, dict) or not _is_manifest(data):
        return None, "is corrupt: not a state manifest"
    return data, None


def _is_manifest(data):
    counts_ok = all(isinstance(data.get(k), int) and not isinstance(data.get(k), bool) and data[k] >= 0
                    for k in ("epoch", "step"))
    name = data.get("weights")
    # A bare file name inside the folder: a manifest never points elsewhere.
    return counts_ok and isinstance(name, str) and name == os.path.basename(name) and name.endswith(_WEIGHTS_SUFFIX)


def _pointer(checkpoint_dir):
    data, _ = _read_json(os.path.join(checkpoint_dir, STATE_FILE))
    return data or {}


def _candidates(checkpoint_dir):
    """([(manifest, its path)], [problems]) newest first: latest.json's, then the manifests on disk."""
    candidates, problems, seen = [], [], set()
    pointer_path = os.path.join(checkpoint_dir, STATE_FILE)
    if os.path.exists(pointer_path):
        data, why = _read_json(pointer_path)
        if why:
            problems.append(f"{pointer_path} {why}")
        else:
            candidates.append((data, pointer_path))
            seen.add(data["weights"])
    for name in _manifests_on_disk(checkpoint_dir):
        path = os.path.join(checkpoint_dir, name)
        data, why = _read_json(path)
        if why:
            problems.append(f"{path} {why}")
        elif data["weights"] not in seen:
            candidates.append((data, path))
            seen.add(data["weights"])
    candidates.sort(key=lambda item: (item[0]["epoch"], item[0]["step"]), reverse=True)
    return candidates, problems


def _check_file(checkpoint_dir, manifest):
    """Why the state's weights file cannot be used, or None (size and checksum match)."""
    path = os.path.join(checkpoint_dir, manifest["weights"])
    try:
        size, sha256 = file_digest(path)
    except OSError as error:
        return f"{path} cannot be read: {error.strerror or error}"
    if "size" in manifest and size != manifest["size"]:
        return f"{path} is truncated or changed: {size} bytes, its manifest says {manifest['size']}"
    if "sha256" in manifest and sha256 != manifest["sha256"]:
        return f"{path} is corrupt: its SHA-256 does not match its manifest"
    return None


def read_state(checkpoint_dir):
    """(epoch, step, weights path) of the newest state whose file checks out, or (0, 0, None).

    For messages (what a rerun would resume from); it loads nothing.
    """
    candidates, _ = _candidates(checkpoint_dir)
    for manifest, _ in candidates:
        if _check_file(checkpoint_dir, manifest) is None:
            return manifest["epoch"], manifest["step"], os.path.join(checkpoint_dir, manifest["weights"])
    return 0, 0, None


def check_resumable(checkpoint_dir):
    """Before any work: CheckpointError if states were saved but none of their files checks out.

    The same verdict `load_state` would reach later (but for a file that
    checks out and still does not load), found before the data is read.
    """
    candidates, problems = _candidates(checkpoint_dir)
    for manifest, _ in candidates:
        why = _check_file(checkpoint_dir, manifest)  # each file hashed once
        if why is None:
            return
        problems.append(why)
    orphans = _orphan_weights(checkpoint_dir, candidates)
    if problems or orphans:
        _no_usable_state(checkpoint_dir, problems, orphans)


def _no_usable_state(checkpoint_dir, problems, orphans):
    found = "; ".join(problems) or f"weights without a manifest: {', '.join(orphans)}"
    raise CheckpointError(
        f"no usable saved state in {checkpoint_dir}: {found}; to start over, delete {checkpoint_dir} "
        f"(the run's saved states) or choose a new --model_dir"
    )


def load_state(model, checkpoint_dir, log=print):
    """Load the newest good state into `model`: (epoch, step), (0, 0) if none was ever saved.

    Each bad candidate is named in a `log` line; CheckpointError when states
    were found but none can be used (never a silent restart from scratch).
    """
    candidates, problems = _candidates(checkpoint_dir)
    orphans = _orphan_weights(checkpoint_dir, candidates)
    if not candidates and not problems and not orphans:
        return 0, 0
    for manifest, _ in candidates:
        why = _check_file(checkpoint_dir, manifest)
        if why is None:
            path = os.path.join(checkpoint_dir, manifest["weights"])
            try:
                model.load_weights(path)
            except Exception as error:  # h5py/Keras raise OSError, ValueError, KeyError... for a bad file
                why = f"{path} cannot be loaded: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
        if why is None:
            for problem in problems:
                log(f"checkpoint: {problem}; resuming from {manifest['weights']} "
                    f"(epoch {manifest['epoch']}, step {manifest['step']})")
            return manifest["epoch"], manifest["step"]
        problems.append(why)
    _no_usable_state(checkpoint_dir, problems, orphans)


def _orphan_weights(checkpoint_dir, candidates):
    """State weight files that no readable manifest describes."""
    try:
        names = os.listdir(checkpoint_dir)
    except OSError:
        return []
    described = {manifest["weights"] for manifest, _ in candidates}
    return sorted(n for n in names if n.startswith("state-") and n.endswith(_WEIGHTS_SUFFIX) and n not in described)
