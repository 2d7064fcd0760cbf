"""modelkin: audit the provenance of neural-network models from their weights."""

__version__ = "0.1.0"

__all__ = ["CompareOptions", "ComparisonResult", "ModelkinError", "__version__", "compare"]

# The public names load on first use (PEP 562), so that ``modelkin --help`` and ``modelkin inspect`` do not
# import the whole pipeline (scipy among it) before doing anything.
_LAZY = {
    "compare": ".api",
    "ModelkinError": ".errors",
    "CompareOptions": ".options",
    "ComparisonResult": ".results",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
