"""Directories that appear whole or not at all: build in a temp folder beside the target, rename."""
import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_dir(final, replace=True):
    """Yield a temp folder beside `final`; on success it is renamed to `final` (replacing an old
    one if `replace`), on any exception or interrupt it is deleted. Its name starts with
    `.partial-`, which no reader takes for a finished artifact."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        yield tmp
        if replace and os.path.exists(final):
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
