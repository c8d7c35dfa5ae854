DROP FUNCTION datalayer_drop_log_partitions(timestamptz);
DROP FUNCTION datalayer_ensure_log_partitions(integer);
DROP FUNCTION datalayer_ensure_log_partition(date);
DROP FUNCTION datalayer_log_partition_name(date);
DROP TABLE system_log;
