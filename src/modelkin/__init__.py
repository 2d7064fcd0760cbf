"""modelkin: audit the provenance of neural-network models from their weights."""

__version__ = "0.1.0"

from .api import compare  # noqa: E402
from .errors import ModelkinError  # noqa: E402
from .options import CompareOptions  # noqa: E402
from .results import ComparisonResult  # noqa: E402

__all__ = ["CompareOptions", "ComparisonResult", "ModelkinError", "__version__", "compare"]
