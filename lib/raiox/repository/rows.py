"""Rows read as records: a statement's columns become the fields of a frozen pydantic record (`raiox.models.Record`),
named as the columns, through psycopg's `class_row`; callers read attributes, never `row["column"]`."""

from __future__ import annotations

from typing import TypeVar

from psycopg.abc import Params, QueryNoTemplate
from psycopg.rows import class_row

from raiox.database import Connection
from raiox.models import Record

R = TypeVar("R", bound=Record)


def one(conn: Connection, record: type[R], query: QueryNoTemplate, params: Params | None = None) -> R | None:
    """The statement's first row as `record`, or None when it returns none."""
    with conn.cursor(row_factory=class_row(record)) as cursor:
        return cursor.execute(query, params).fetchone()


def many(conn: Connection, record: type[R], query: QueryNoTemplate, params: Params | None = None, *,
         prepare: bool | None = None) -> list[R]:
    """Every row of the statement as `record`, in its order."""
    with conn.cursor(row_factory=class_row(record)) as cursor:
        return cursor.execute(query, params, prepare=prepare).fetchall()
