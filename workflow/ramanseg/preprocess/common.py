"""What the steps of the preprocessing share: their warning class and the channel threads."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Values per block of the passes that work block by block (512 KiB of float32, which
#: stays in a core's L2 cache for the next step).
CACHE_BLOCK = 131_072


class PreprocessWarning(UserWarning):
    """Something in a sample worth a look, but not an error (recorded in ``qc.json``)."""


def map_channels(function: Callable[[int], Any], n_channels: int, threads: int) -> list[Any]:
    """``[function(c) for c in range(n_channels)]``, on ``threads`` threads.

    numpy releases the GIL in the per-channel work, so threads give a real speed-up.

    Args:
        function: called with each channel index.
        n_channels: number of channels.
        threads: most threads to use; 1 runs in the calling thread.
    """
    if threads <= 1 or n_channels <= 1:
        return [function(c) for c in range(n_channels)]
    with ThreadPoolExecutor(max_workers=min(threads, n_channels)) as pool:
        return list(pool.map(function, range(n_channels)))
