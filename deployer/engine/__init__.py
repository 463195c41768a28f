"""The local batch-endpoint engine: Azure ML's batch scoring semantics on one machine.

- `reader`: one input file → record batches with the model signature's columns and types
  (pyarrow's streaming CSV reader, parquet by row group), or a `FileError` naming the file
  and column in Azure ML's words;
- `worker`: a scoring process that loads the MLflow model once and scores mini-batches;
- `job`: the job runner (`python -m deployer.engine <job dir>`): resolves the input,
  groups files into mini-batches, runs `instance_count × max_concurrency_per_instance`
  worker processes with a per-mini-batch timeout and retries, applies `error_threshold`,
  appends `predictions.csv` in input order and writes Azure ML's log layout;
- `records`: the job record (`job.json`) that `invoke`, `status` and `jobs show` read.

Nothing here imports mlflow except the worker processes.
"""
