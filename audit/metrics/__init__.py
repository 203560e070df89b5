"""Pure metric functions: numpy in, numbers out. No I/O, no torch, no recipe.

Each function's docstring gives its formula and a reference; each is cross-checked in the tests
against an independent implementation (scikit-learn, fairlearn, or a closed form).
"""
