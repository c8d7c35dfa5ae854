-- A migration waiting for a lock queues all traffic behind it: give up after 10 s and retry later.
SET LOCAL lock_timeout = '10s';
SET LOCAL statement_timeout = '10min';

DROP FUNCTION datalayer_drop_log_partitions(timestamptz);
DROP FUNCTION datalayer_ensure_log_partitions(integer);
DROP FUNCTION datalayer_ensure_log_partition(date);
DROP FUNCTION datalayer_log_partition_name(date);
DROP TABLE system_log;
