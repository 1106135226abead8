"""The core: the feature schema, the model bundle, the predictor, request validation,
drift profiles and the typed errors.

No BentoML, MLflow, Starlette or Prometheus import here (import-linter checks it): the
registered MLflow model, the training stages and the service all build on this layer.
"""
