"""The Space's entry point: launch the side-by-side demo that space_config.json (next to it) sets up.

hubstyle copies this file into every Space folder it builds, beside space_app.py (a copy of hubstyle/space.py), so
the Space runs with its requirements.txt alone.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported anywhere

from pathlib import Path  # noqa: E402

from space_app import launch, load_settings  # noqa: E402

if __name__ == "__main__":
    launch(load_settings(Path(__file__).resolve().parent))
