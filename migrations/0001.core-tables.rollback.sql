-- A migration waiting for a lock queues all traffic behind it: give up after 10 s and retry later.
SET LOCAL lock_timeout = '10s';
SET LOCAL statement_timeout = '10min';

DROP TABLE tool_generations;
DROP TABLE analysis_files;
DROP TABLE data_analyses;
DROP TABLE users;
DROP FUNCTION datalayer_touch_updated_at();
