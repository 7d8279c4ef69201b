"""The command-line room: `climb` (main), `climb predictor`, and what they run (the run plan,
the in-process runner and its checks before any step, the SQL catalog, trace, the report
server). Imports the Dagster room, never the other way round."""
