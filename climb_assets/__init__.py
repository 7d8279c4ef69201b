"""climb-assets: CLIMB data-mixture search as Dagster software-defined assets."""

__version__ = "0.1.0"
