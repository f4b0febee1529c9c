"""Where the demo page, the JS client and Quill's browser build are found.

Two layouts, looked up in this order:

* **installed** (a wheel, the Docker image): package data under
  ``tandem/static/`` — ``demo/``, ``client/`` (the JS client's ``src``) and
  ``vendor/quill/dist/`` — copied there when the wheel is built (``setup.py``);
* **source checkout** (``pip install -e``, ``make serve``): the repository's
  ``client/demo``, ``client/src`` and ``client/node_modules`` (after
  ``npm install`` in ``client/``, which ``scripts/bootstrap.sh`` runs).

This module only finds files; the server mounts them and ``tandem doctor``
reports what is missing. It must not import the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["REQUIRED", "Assets", "find_assets"]

_PACKAGE = Path(__file__).resolve().parent
#: The repository's client/ folder, when running from a source checkout (src/tandem/..).
_CHECKOUT_CLIENT = _PACKAGE.parents[1] / "client"

#: The files the demo page cannot work without, relative to each folder of ``Assets``.
REQUIRED = {
    "demo": ("index.html", "app.js", "style.css", "quill-delta.js"),
    "client": ("index.js", "connection.js", "bindings/quill.js"),
    "vendor": ("quill/dist/quill.js", "quill/dist/quill.snow.css"),
}


@dataclass(frozen=True)
class Assets:
    """The three folders the server mounts at ``/demo``, ``/client`` and ``/vendor``."""

    demo: Path
    client: Path
    vendor: Path
    #: "installed" or "checkout".
    layout: str

    def missing(self) -> list[str]:
        """Required files that are absent (empty when the demo can work)."""
        return [
            str(getattr(self, folder) / name)
            for folder, names in REQUIRED.items()
            for name in names
            if not (getattr(self, folder) / name).is_file()
        ]


def find_assets() -> Assets:
    """The installed assets if the package has them, else the source checkout's."""
    static = _PACKAGE / "static"
    if (static / "demo" / "index.html").is_file():
        return Assets(static / "demo", static / "client", static / "vendor", "installed")
    return Assets(
        _CHECKOUT_CLIENT / "demo",
        _CHECKOUT_CLIENT / "src",
        _CHECKOUT_CLIENT / "node_modules",
        "checkout",
    )
