"""Which SQL `climb sql` accepts: reads only, checked by DuckDB's own parser.

The connection is locked down as well (no file outside the output folder, no extensions, no
configuration changes), but a COPY ... TO inside the output folder would still pass that, so
every statement must also be a query.
"""

from __future__ import annotations

import re

import duckdb

# EXPLAIN ANALYZE runs the statement it explains, so that statement must be a query too.
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(ANALY[SZ]E\s+)?", re.IGNORECASE)


class ReadOnlyQueryError(ValueError):
    """A statement that is not a query."""


def check_read_only(sql: str) -> None:
    """Raise ReadOnlyQueryError unless every statement of `sql` only reads (SELECT, WITH,
    FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN of one of those). Invalid SQL raises
    DuckDB's parser error."""
    statements = duckdb.extract_statements(sql)
    if not statements:
        raise ReadOnlyQueryError("no SQL statement given")
    for statement in statements:
        if not _is_query(statement):
            first = statement.query.strip().split(None, 1)[0].upper()
            raise ReadOnlyQueryError(
                f"climb sql only reads; {first} statements are refused "
                "(use SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN)"
            )


def _is_query(statement: duckdb.Statement) -> bool:
    if statement.type == duckdb.StatementType.SELECT:
        return True
    if statement.type != duckdb.StatementType.EXPLAIN:
        return False
    inner = duckdb.extract_statements(_EXPLAIN.sub("", statement.query, count=1))
    return len(inner) == 1 and inner[0].type == duckdb.StatementType.SELECT
