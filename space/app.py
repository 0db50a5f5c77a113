"""The Space's entry point: launch the side-by-side demo that space_config.json (next to it) sets up.

hubstyle copies this file into every Space folder it builds, beside space_app.py (a copy of hubstyle/space.py), so
the Space runs with its requirements.txt alone.
"""

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported anywhere

from pathlib import Path  # noqa: E402

from space_app import HubstyleError, launch, load_settings  # noqa: E402

if __name__ == "__main__":
    try:
        launch(load_settings(Path(__file__).resolve().parent))
    except HubstyleError as err:  # bad settings, or models out of reach: one line, not a traceback
        sys.exit(f"error: {err}")
