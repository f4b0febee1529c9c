"""Copies the demo page and the JS client's browser assets into the wheel.

Everything else about the package is in pyproject.toml. A wheel (``python -m
build``) carries, as package data under ``tandem/static/`` (see
``tandem.assets``):

* ``demo/``    — client/demo (the page, its script and style);
* ``client/``  — client/src (the JS client's ES modules the page imports);
* ``vendor/quill/dist/`` — Quill's browser build and stylesheet, from
  client/node_modules (``npm install`` in client/ first; its licence comes along).

So an installed server serves a working demo with no network and no Node at run
time. An editable install (``pip install -e``) copies nothing: the server then
serves the checkout's client/ folder directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CLIENT = ROOT / "client"
#: (source under client/, destination under tandem/static/)
ASSETS = [
    ("demo", "demo"),
    ("src", "client"),
    ("node_modules/quill/dist/quill.js", "vendor/quill/dist/quill.js"),
    ("node_modules/quill/dist/quill.js.LICENSE.txt", "vendor/quill/dist/quill.js.LICENSE.txt"),
    ("node_modules/quill/dist/quill.snow.css", "vendor/quill/dist/quill.snow.css"),
    ("node_modules/quill/LICENSE", "vendor/quill/LICENSE"),
]


class build_py_with_assets(build_py):  # noqa: N801 - setuptools' naming
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        missing = [source for source, _ in ASSETS if not (CLIENT / source).exists()]
        if missing:
            raise SystemExit(
                "setup.py: the demo's browser assets are missing: "
                + ", ".join(f"client/{m}" for m in missing)
                + "\n  run `npm install` in client/ (scripts/bootstrap.sh does) and build again"
            )
        static = Path(self.build_lib) / "tandem" / "static"
        shutil.rmtree(static, ignore_errors=True)  # nothing stale from an earlier build
        for source, target in ASSETS:
            src, dst = CLIENT / source, static / target
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": build_py_with_assets})
