DROP TABLE tool_generations;
DROP TABLE analysis_files;
DROP TABLE data_analyses;
DROP TABLE users;
DROP FUNCTION datalayer_touch_updated_at();
