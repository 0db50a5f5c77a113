"""The Space entry point: read space_config.json next to this file (HUBSTYLE_* env overrides) and launch the demo."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported anywhere

from pathlib import Path  # noqa: E402

from hubstyle.space import launch, load_settings  # noqa: E402

if __name__ == "__main__":
    launch(load_settings(Path(__file__).resolve().parent))
