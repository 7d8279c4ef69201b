"""The scheduled search as settings make it: on by default, nightly; off with a null cron."""

from __future__ import annotations

import pytest

from climb_assets.definitions import build_definitions
from climb_assets.defs.graph import scheduled_assets
from climb_assets.settings import Settings, SettingsError, load_settings


def conditions(settings: Settings) -> dict[str, str | None]:
    graph = build_definitions(settings).resolve_asset_graph()
    return {
        key.to_user_string(): (
            c.get_label() if (c := graph.get(key).automation_condition) else None
        )
        for key in graph.get_all_asset_keys()
    }


def sensor_names(settings: Settings) -> set[str]:
    return {sensor.name for sensor in build_definitions(settings).sensors or []}


def test_the_search_and_dataset_rerun_nightly_by_default() -> None:
    settings = Settings()
    assert settings.automation.search_cron == "0 2 * * *"
    labels = conditions(settings)
    for asset in scheduled_assets(build_definitions(settings)):
        assert "0 2 * * * (UTC)" in (labels[asset] or ""), asset
    assert labels["mixture_evaluation"] is None, "the evaluation is started on purpose"
    assert "climb_scheduled_search" in sensor_names(settings)


def test_a_null_cron_turns_the_scheduled_search_off() -> None:
    settings = Settings.model_validate({"automation": {"search_cron": None}})
    labels = conditions(settings)
    assert all(labels[asset] is None for asset in scheduled_assets(build_definitions(settings)))
    assert labels["document_index"] is not None, "the clustering chain stays automated"
    assert sensor_names(settings) == {"corpus_shard_sensor", "climb_automation"}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("automation: {search_cron: 'every night'}", "automation.search_cron.*not a cron"),
        ("automation: {timezone: Mars/Olympus}", "automation.timezone.*not a time zone"),
    ],
)
def test_a_bad_schedule_is_named_by_its_key(tmp_path, yaml_text: str, message: str) -> None:
    path = tmp_path / "climb.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(SettingsError, match=message):
        load_settings(path)
