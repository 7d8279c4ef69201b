"""Pure logic of the pipeline. Nothing under core/ imports dagster."""
