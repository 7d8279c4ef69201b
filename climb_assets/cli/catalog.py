"""SQL over every table the pipeline writes: DuckDB views on the Parquet files.

`outputs/climb.duckdb` holds only views, so it stays small and always reads the current files;
it is rewritten (atomically) by `climb run` and `climb sql --refresh`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from climb_assets.core.shared.atomic import atomic_path
from climb_assets.store import Layout, table_globs

# view name -> glob relative to the output folder, as the store lays the tables out
VIEWS: dict[str, str] = table_globs()


def _create_views(con: duckdb.DuckDBPyConnection, root: Path) -> list[str]:
    made = []
    base = root.resolve()
    for name, pattern in VIEWS.items():
        if not any(root.glob(pattern)):
            continue
        path = str(base / pattern).replace("'", "''")
        # union_by_name: rejects of different shards may differ in nullable columns' types.
        # Globs match hidden folders too: skip the temporary ones a killed write leaves behind.
        con.execute(
            f"CREATE OR REPLACE VIEW {name} AS "
            f"SELECT * FROM read_parquet('{path}', union_by_name = true, filename = true) "
            f"WHERE NOT contains(substr(filename, {len(str(base)) + 1}), '/.')"
        )
        made.append(name)
    return made


def connect(layout: Layout) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """A read-only, in-memory DuckDB connection with a view per table that exists.

    Files are readable only under the output folder, extensions are neither installed nor
    loaded, and the configuration is locked so a query cannot undo this. Pass user SQL through
    `core.shared.read_only_sql.check_read_only` first: a COPY ... TO inside the output folder would
    pass these settings."""
    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    made = _create_views(con, layout.root)
    # allowed_directories can only be set once the database runs, and before the lock
    con.execute("SET allowed_directories = ?", [[f"{layout.root.resolve()}/"]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con, made


def write_catalog(layout: Layout) -> list[str]:
    """(Re)write `climb.duckdb` with the views; returns their names."""
    with atomic_path(layout.catalog) as tmp:
        tmp.unlink()  # DuckDB must create the file itself
        con = duckdb.connect(str(tmp))
        try:
            made = _create_views(con, layout.root)
        finally:
            con.close()
    return made
