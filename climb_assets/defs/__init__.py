"""The Dagster room: the assets, their resources, partitions, automation and metadata, the
graph that orders them, and run bookkeeping. Builds on core, settings and the store; the
command line imports it, never the other way round."""
