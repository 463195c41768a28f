"""The local batch-endpoint engine: Azure ML's batch scoring semantics on one machine.

- `job`: the job runner (`python -m deployer.engine <job dir>`): resolves the input,
  groups files into mini-batches and plans their pieces, then loops over the pool and
  the ledger, applies `error_threshold`, appends `predictions.csv` in input order and
  writes Azure ML's log layout;
- `ledger`: the mini-batches, their pieces and attempts: what runs next, what has
  settled (succeeded, or failed after `max_retries`), the order successes are written in;
- `pool`: the `instance_count × max_concurrency_per_instance` workers: starts their
  processes, hands each idle one a task, stops and replaces a process that dies or runs
  past the timeout, stops them all at the end;
- `messages`: what runner, pool and scoring processes tell each other (dataclasses);
- `worker`: a scoring process (spawned, loading the MLflow model itself, or forked from
  the runner with the model loaded) that scores mini-batches or pieces of them;
- `reader`: one input file → record batches with the model signature's columns and types
  (pyarrow's streaming CSV reader, parquet by row group), or a `FileError` naming the file
  and column in Azure ML's words;
- `publish`: the output streamed to the datastore as blocks, committed only when the job
  has completed;
- `processes`: processes named by pid and start time, and scoring processes forked so
  that they die with the runner;
- `lifecycle`: the end of a job that did not end by itself (a dead runner, `cancel`);
- `records`: the job record (`job.json`) that `invoke`, `status` and `jobs show` read.

Nothing here imports mlflow except the scoring processes and, when it runs several of
them, the job runner (it loads the model once and forks them).
"""
