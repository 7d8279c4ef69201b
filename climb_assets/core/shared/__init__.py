"""Helpers every stage uses: atomic writes, execution backends, devices, plots."""
