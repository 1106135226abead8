"""The registered MLflow model (a pyfunc over the core); it carries only the core."""
