"""Training pipeline: one module per DVC stage (pure core function + thin CLI)."""
