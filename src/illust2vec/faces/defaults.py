"""Face-detection defaults (no heavy imports: the CLI's option parser reads them)."""

#: Default longest side for detection: larger images are downscaled first.
DEFAULT_MAX_SIDE = 1024
#: Default crop margin: fraction of the face box added on every side.
DEFAULT_MARGIN = 0.25
