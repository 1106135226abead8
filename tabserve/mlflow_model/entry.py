"""The MLflow model-from-code entry point of the registered model (see ``model.py``).

MLflow runs this file when it loads the model: it names the model object, instead of
unpickling one (``train`` logs ``python_model=<this file>``). Never imported otherwise.
"""

from mlflow.models import set_model

from tabserve.mlflow_model.model import TabularModel

set_model(TabularModel())
