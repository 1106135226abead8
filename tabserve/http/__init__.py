"""The HTTP edge as pure ASGI: the error envelope, the JSON body, auth and the OpenAPI
document. Starlette's helpers, no BentoML: the serving layer stacks these middlewares.
"""
