"""Where the studio keeps files of its own (converted weights, later the style library)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$STYLE_STUDIO_CACHE``, else ``$XDG_CACHE_HOME/style-studio``, else ``~/.cache/style-studio``."""
    configured = os.environ.get("STYLE_STUDIO_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "style-studio"
