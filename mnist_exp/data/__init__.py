"""The data layer: dataset sources, IDX files, splits and image files (paths in, arrays out)."""
