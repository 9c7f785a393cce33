"""Progress bars for long loops (tqdm, on stderr, shown only on a terminal)."""
from tqdm import tqdm


def bar(iterable=None, desc=None, total=None, unit="it"):
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=None, leave=False, dynamic_ncols=True)
