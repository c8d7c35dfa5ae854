"""What check knows about functions: which never return NULL, and which only for NULL input.

Anything not listed here may return NULL (and says so, with the function's name): a false alarm costs
an annotation, a false pass costs an outage. Add a function only when PostgreSQL's documentation says it
cannot return NULL for non-NULL arguments (``array_length`` of an empty array, a non-matching
``substring``, ``to_char``/``extract`` of ``infinity`` and ``current_schema`` can, so they are absent).
``lower``/``upper`` are listed for text; of a range or multirange they are NULL when it is empty or
unbounded, so :mod:`_check_exprs` accepts them only for an argument whose type it knows is no range.
"""

from __future__ import annotations

__all__ = ["AGGREGATES", "ALWAYS_VALUE", "FIRST_ARG_STRICT", "GROUP_STRICT", "STRICT", "WINDOW_NOT_NULL"]

# Never NULL, whatever the arguments.
ALWAYS_VALUE = frozenset(
    {
        "count",
        "now",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "gen_random_uuid",
        "random",
        "pg_backend_pid",
        "version",
        "current_database",
        "concat",
        "json_build_object",
        "jsonb_build_object",
        "json_build_array",
        "jsonb_build_array",
        "num_nulls",
        "num_nonnulls",
        "quote_nullable",
        "txid_current",
        "pg_current_xact_id",
        "grouping",
    }
)

# NULL only when an argument is NULL (and then usually NULL): a value for every non-NULL input.
STRICT = frozenset(
    {
        "lower",
        "upper",
        "initcap",
        "length",
        "char_length",
        "character_length",
        "octet_length",
        "bit_length",
        "btrim",
        "ltrim",
        "rtrim",
        "md5",
        "sha224",
        "sha256",
        "sha384",
        "sha512",
        "abs",
        "round",
        "floor",
        "ceil",
        "ceiling",
        "trunc",
        "sign",
        "mod",
        "replace",
        "left",
        "right",
        "lpad",
        "rpad",
        "repeat",
        "reverse",
        "translate",
        "split_part",
        "strpos",
        "position",
        "starts_with",
        "quote_ident",
        "quote_literal",
        "encode",
        "decode",
        "chr",
        "ascii",
        "to_json",
        "to_jsonb",
        "row_to_json",
        "array_to_json",
        "json_typeof",
        "jsonb_typeof",
        "jsonb_pretty",
        "json_array_length",
        "jsonb_array_length",
        "cardinality",
        "array_to_string",
        "array_append",
        "array_prepend",
        "array_cat",
        "date_trunc",
        "timezone",
        "make_interval",
        "make_date",
        "make_time",
        "justify_interval",
        "justify_days",
        "justify_hours",
        "isfinite",
        "age",
        "to_timestamp",
        "to_number",
        "regexp_replace",
        "like_escape",
        "similar_to_escape",
        "similar_escape",
        "string_to_array",
        "uuid_send",
        "host",
        "family",
        "masklen",
        "int4",
        "int8",
        "float8",
        "numeric",
        "text",
        "to_tsvector",
        "to_tsquery",
        "plainto_tsquery",
        "phraseto_tsquery",
        "websearch_to_tsquery",
        "ts_rank",
        "ts_rank_cd",
        "setweight",
    }
)

# NULL exactly when the first argument is NULL (the rest may be NULL).
FIRST_ARG_STRICT = frozenset({"format", "concat_ws"})

AGGREGATES = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "string_agg",
        "json_agg",
        "jsonb_agg",
        "json_object_agg",
        "jsonb_object_agg",
        "bool_and",
        "bool_or",
        "every",
        "bit_and",
        "bit_or",
        "stddev",
        "variance",
        "percentile_cont",
        "percentile_disc",
        "mode",
    }
)
# Aggregates whose value is never NULL for a non-empty group of non-NULL inputs: all but these.
GROUP_STRICT = AGGREGATES - {
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",  # NULL for a single row
    "variance",
    "percentile_cont",  # ordered-set aggregates
    "percentile_disc",
    "mode",
}
WINDOW_NOT_NULL = frozenset({"row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "count"})
