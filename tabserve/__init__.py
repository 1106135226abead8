"""tabserve: the runtime library of the service, the training stages and the UI.

Layers, each a folder, imports running one way (down this list; ``make lint`` checks
it with import-linter):

- ``cli``: the ``tabserve`` command;
- ``serving``: everything that imports BentoML; ``mlflow_model``: the registered model;
- ``http``: pure ASGI (envelope, JSON body, auth, OpenAPI);
- ``security``: keys, tokens, scopes, users, login guard, state store;
- ``core``: schema, bundle, predictor, validation, drift, errors.
"""
