"""Batch scoring (``tabserve score``): the registered MLflow model over files of any size,
streamed on one machine (:mod:`tabserve.batch.local`) or as a Spark UDF
(:mod:`tabserve.batch.spark`). Needs the training dependencies (MLflow, pyarrow); the Spark
engine also the ``spark`` group. Nothing here is imported by the service."""
