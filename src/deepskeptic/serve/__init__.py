"""`deepskeptic serve`: trained runs behind a REST API and a web page.

``create_app(paths, ServeOptions(...))`` builds the FastAPI app (app.py: health, models, predict;
use.py: generate, translate, explain; watch.py: runs in progress); ``serve(...)`` runs it on
uvicorn (server.py). Inputs are decoded and bounded in bounds.py and inputs.py; concurrent predict
requests are batched per model in batching.py; the page is page/ (plain HTML, CSS and JavaScript).
"""
from deepskeptic.serve.app import ServeOptions, create_app
from deepskeptic.serve.bounds import Bounds
from deepskeptic.serve.server import serve

__all__ = ["create_app", "ServeOptions", "Bounds", "serve"]
