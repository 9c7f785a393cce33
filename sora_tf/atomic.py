"""Files and folders that appear whole or not at all: written beside the target, then renamed.

A run killed mid-write leaves the previous good file in place, never a half-written one, and
its temp files are removed by the next writer in the folder once the killed process is gone.
What is published gets the permissions the user's umask gives a new file or folder (644 / 755
under umask 022), not the private 600 / 700 of a temp file, so that TF Serving running as
another user can read an export.
"""
import contextlib
import json
import os
import shutil
import tempfile

TMP, PARTIAL = ".tmp-", ".partial-"  # then the writing process's id: `.tmp-<pid>-...`


def atomic_write(path, write):
    """Call write(tmp_path) for a temp file in the target's folder, then rename it to `path`.
    The temp name ends with the target's name, so its extension still tells writers the format."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP}{os.getpid()}-", suffix=os.path.basename(path), dir=folder)
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


@contextlib.contextmanager
def atomic_dir(final, replace=True):
    """Yield a temp folder beside `final`; on success it is renamed to `final`, on any exception
    or interrupt it is deleted. With `replace`, an old `final` is moved aside first and deleted
    after, so that `final` is never missing nor mixed; without, an existing `final` is an error.
    The temp folder's name starts with `.partial-<pid>-`, which no reader takes for a finished
    artifact."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    remove_stale(parent)
    tmp = tempfile.mkdtemp(prefix=f"{PARTIAL}{os.getpid()}-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = None
        if os.path.exists(final):
            if not replace:
                raise FileExistsError(f"{final} already exists")
            old = tempfile.mkdtemp(prefix=f"{PARTIAL}{os.getpid()}-", dir=parent)
            os.rename(final, os.path.join(old, "replaced"))
        os.rename(tmp, final)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(path, marker, what):
    """Raise a ValueError naming `path` unless writing `what` there with `atomic_dir` can only
    replace an earlier `what`: `path` is absent, an empty folder, or a folder holding `marker`
    (the file every `what` has). A user's other files are never deleted."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path}: a file is there, where {what} (a folder) would go")
    if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, marker)):
        raise ValueError(f"{path}: a folder with other files in it, not {what}; give a new or empty "
                         f"folder ({what} there is replaced whole)")


def remove_stale(folder):
    """Delete the `.partial-<pid>-*` folders and `.tmp-<pid>-*` files in `folder` whose process
    is no longer running (killed mid-write); those of live processes stay."""
    for name in os.listdir(folder):
        prefix = next((p for p in (TMP, PARTIAL) if name.startswith(p)), None)
        pid = name[len(prefix):].split("-", 1)[0] if prefix else ""
        if pid.isdigit() and not _alive(int(pid)):
            path = os.path.join(folder, name)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
