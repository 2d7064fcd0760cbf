"""Ground-truth model zoo: tiny torch-trained models and labelled (related / independent) pairs.

This subpackage is the only place in modelkin that imports torch (an optional extra,
``pip install modelkin[zoo]``).  Entry points: ``build.build_zoo`` and ``build.zoo_build_command``.
"""

__all__ = ["build_zoo", "zoo_build_command"]


def __getattr__(name: str):
    # Lazy, so ``import modelkin.zoo`` does not pull in torch before it is needed.
    if name in __all__:
        from . import build

        return getattr(build, name)
    raise AttributeError(name)
