"""The bounded memo every launch-path cache uses.

The launchers memoise what a call settled (autotune's config, an op's bound launch, the
CPU backend's access plans and per-grid program ids) under keys that hold shapes, which
a long-running server varies without end (token counts, the longest context): each
memo forgets its oldest entries past a limit instead of growing.
"""

from __future__ import annotations

import threading
from typing import Any


class BoundedMemo(dict):
    """A dict that forgets its oldest entry once it holds `limit`. Lookups are plain dict
    lookups (the hot path); insertions take a lock, so that threads launching at once
    never evict the same entry twice."""

    def __init__(self, limit: int = 4096) -> None:
        super().__init__()
        self.limit = limit
        self._insert = threading.Lock()

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._insert:
            if key not in self and len(self) >= self.limit:
                del self[next(iter(self))]
            super().__setitem__(key, value)
