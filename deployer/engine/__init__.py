"""The local batch-endpoint engine: Azure ML's batch scoring semantics on one machine.

- `reader`: one input file → record batches with the model signature's columns and types
  (pyarrow's streaming CSV reader, parquet by row group), or a `FileError` naming the file
  and column in Azure ML's words;
- `worker`: a scoring process (spawned, loading the MLflow model itself, or forked from
  the runner with the model loaded) that scores mini-batches or pieces of them;
- `job`: the job runner (`python -m deployer.engine <job dir>`): resolves the input,
  groups files into mini-batches, runs `instance_count × max_concurrency_per_instance`
  worker processes with a per-mini-batch timeout and retries, applies `error_threshold`,
  appends `predictions.csv` in input order and writes Azure ML's log layout;
- `records`: the job record (`job.json`) that `invoke`, `status` and `jobs show` read;
- `processes`: processes named by pid and start time, and scoring processes forked so
  that they die with the runner;
- `lifecycle`: the end of a job that did not end by itself (a dead runner, `cancel`).

Nothing here imports mlflow except the scoring processes and, when it runs several of
them, the job runner (it loads the model once and forks them).
"""
