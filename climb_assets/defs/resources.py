"""Dagster resources. The settings resource is the one way assets learn where things are."""

from __future__ import annotations

import dagster as dg

from climb_assets.settings import Settings, load_settings
from climb_assets.store import Layout


class ClimbSettings(dg.ConfigurableResource):
    """The pipeline's settings: `settings_json` when given (tests, `climb`), else the YAML file
    at `config_path`, else $CLIMB_CONFIG, else the defaults for the bundled sample."""

    config_path: str | None = None
    settings_json: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ClimbSettings:
        return cls(settings_json=settings.model_dump_json())

    def get(self) -> Settings:
        """Parse and validate the settings (each call parses again: call it once per step)."""
        if self.settings_json:
            return Settings.model_validate_json(self.settings_json)
        return load_settings(self.config_path)

    def resolve(self) -> tuple[Settings, Layout]:
        """The settings, parsed once for this step, and the artifact store they point at."""
        settings = self.get()
        return settings, Layout(settings.output_dir)
