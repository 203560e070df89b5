"""Recipes: TOML files that say which model, which data, which suites with which parameters, and which gates.

Validation is strict and happens here, at the boundary, so that the core can trust its inputs.
"""

from audit.recipe.load import Recipe, load_recipe

__all__ = ["Recipe", "load_recipe"]
