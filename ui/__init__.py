"""The browser UI of tabserve: a Gradio app built from the served model's FeatureSchema.

It is mounted inside the BentoML service at ``/ui`` (:func:`ui.mount.create_ui_app`)
and calls the service's predictor in process, so its answers are the API's. Nothing
here names a feature of a particular dataset: the form, the charts and the batch
scoring are all driven by the schema that ships with the model.
"""
