"""What a location string names: a Hub id (``org/name``), an HTTP(S) URL, or a local path.

Kept apart from ``hub`` so that telling them apart costs no import of the remote machinery.
"""

from __future__ import annotations

import os
import re

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def is_hub_id(location: str) -> bool:
    """``org/name`` that is not an existing local path."""
    return bool(HUB_ID.match(location)) and not os.path.exists(location)
