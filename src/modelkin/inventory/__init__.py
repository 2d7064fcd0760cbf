"""Inventory: tensors -> roles, components, layers (knowledge in ``_data/architectures``)."""

from .families import COMPONENTS, families
from .inventory import Inventory, TensorEntry, build_inventory, detect_family
from .roles import ROLES, Role

__all__ = ["COMPONENTS", "ROLES", "Inventory", "Role", "TensorEntry", "build_inventory", "detect_family", "families"]
