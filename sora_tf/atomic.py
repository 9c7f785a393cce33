"""Files and folders that appear whole or not at all: written beside the target, then renamed.

A run killed mid-write leaves the previous good file in place, never a half-written one. What is
published gets the permissions the user's umask gives a new file or folder (644 / 755 under
umask 022), not the private 600 / 700 of a temp file, so that TF Serving running as another
user can read an export.
"""
import contextlib
import json
import os
import shutil
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call write(tmp_path) for a temp file in the target's folder, then rename it to `path`.
    The temp name ends with the target's name, so its extension still tells writers the format."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_json(path, value):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2)
    return atomic_write(path, write)


def save_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    return atomic_write(path, write)


class Staging(str):
    """The temp folder's path; `final` is where it was published, once it is."""

    final = None


@contextlib.contextmanager
def atomic_dir(final, replace=True, parent=None):
    """Yield a temp folder (a `Staging` path); on success it is renamed to `final`, on any
    exception or interrupt it is deleted. Its name starts with `.partial-`, which no reader takes
    for a finished artifact.

    `final` is a path (an old folder there is replaced if `replace`), or a function of no
    arguments giving one, asked again when another writer takes that path first (the next free
    version number); then `parent` is the folder the temp folder is made in.
    """
    parent = parent or os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = Staging(tempfile.mkdtemp(prefix=".partial-", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        while True:
            target = final() if callable(final) else final
            if replace and not callable(final) and os.path.exists(target):
                shutil.rmtree(target)
            try:
                os.rename(tmp, target)
                tmp.final = target
                break
            except OSError:
                if not callable(final) or not os.path.exists(target):
                    raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
