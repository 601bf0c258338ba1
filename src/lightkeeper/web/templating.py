"""The one Jinja2 loader of the web pages (templates/)."""

from __future__ import annotations

from pathlib import Path

from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

__all__ = ["templates"]
