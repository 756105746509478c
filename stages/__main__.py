"""`python -m stages`: the stage modules, and the hash seed a stage process runs under."""

from __future__ import annotations

import os
import pkgutil
from pathlib import Path

names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]))
print("stages:", " ".join(n for n in names if not n.startswith("_")))
print(
    f"PYTHONHASHSEED={os.environ.get('PYTHONHASHSEED')} hash('polychromic')={hash('polychromic')}"
)
