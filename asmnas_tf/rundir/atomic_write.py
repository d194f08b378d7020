"""Every file the project writes goes through here: whole, or not at all.

The new content goes to a temporary file in the same folder, is flushed to
disk, gets the mode an ordinary write would give it, then replaces the
target with one rename (atomic on POSIX), and the folder is synced so that
the rename survives a crash. A failure at any point (a full disk, a kill)
leaves the previous file as it was and no temporary file behind.
No TensorFlow here: the search space's genotype writer uses it too.
"""

import os
import tempfile


def _ordinary_mode(path):
    """The target's own mode, or what `open(path, 'w')` would give (mkstemp makes 0600)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync(path, flags=os.O_RDONLY):
    # Not every platform can open a directory; the write is still atomic then.
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file_atomic(path, write, suffix=None):
    """`write(temporary_path)` then rename it to `path`.

    `suffix`: the temporary file's ending, for writers that insist on one
    (Keras: '.weights.h5', '.keras'); default the target's extension.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if suffix is None:
        suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, _ordinary_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync(directory)


def write_bytes_atomic(path, data):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    write_file_atomic(path, write)


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode("utf-8"))
