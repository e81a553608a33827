"""Domain priors beyond the square's symmetries: the transform functions, registered by name in `verl_ext.transforms`.

`stain`: H&E stain jitter for histopathology, the built-in non-geometric transform `hed_jitter`. Modules here import
nothing from `verl_ext.transforms` (it imports them), so the built-ins never depend on import order.
"""
