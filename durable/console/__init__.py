"""The web console (``durable ui``): instances, histories and actions in a browser.

Needs the ``ui`` extra (``pip install "durable[ui]"``: Starlette, uvicorn, Jinja2).
"""

from ._app import create_app
from ._serve import serve

__all__ = ["create_app", "serve"]
