"""Domain priors beyond the square's symmetries, registered through `verl_ext.transforms.register_transform`.

`stain`: H&E stain jitter for histopathology — the worked example of a non-geometric, registered transform.
"""
