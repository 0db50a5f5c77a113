"""Hub repo ids and local paths: whether a name is a local path or a Hub id, and what makes a valid repo id.

Every module that takes "a folder or a Hub repo id" asks :func:`is_local_path`; every repo id hubstyle writes or
pushes to passes :func:`check_repo_id`. Whether a folder of that name exists is a separate fact (``Path.is_dir``):
loaders read an existing folder first, as ``from_pretrained`` does.
"""

from __future__ import annotations

import os
from pathlib import Path

from hubstyle.errors import HubstyleError

PATH_STARTS = (".", "/", "~")  # no Hub id starts with these: './x', '../x', '/x', '~/x' are paths


def is_local_path(text: str | os.PathLike) -> bool:
    """Return whether ``text`` is a local path rather than a Hub repo id.

    A path: it starts with '.', '/' or '~', has more than one separator, or has one and exists here ('alice/model'
    could be both an id and a folder below the working directory; an existing folder wins, as it does for
    from_pretrained). A bare name is always an id: 'gpt2' must not depend on the working directory.
    """
    text = str(text)
    if text.startswith(PATH_STARTS):
        return True
    separators = sum(text.count(sep) for sep in {os.sep, os.altsep or os.sep, "/"})
    return separators > 1 or (separators == 1 and Path(text).exists())


def check_repo_id(repo_id: str, what: str = "repo id", *, namespace_required: bool = True) -> str:
    """Return ``repo_id`` after checking it is a Hub repo id and not a local path.

    Repos hubstyle creates need 'namespace/name'. A base model may be any Hub id, including the legacy ones
    without a namespace ('gpt2', 't5-small'): pass ``namespace_required=False`` for those.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = str(repo_id)
    form = "'namespace/name' (e.g. 'alice/shakespeare')" if namespace_required else "'name' or 'namespace/name'"
    if is_local_path(text):
        raise HubstyleError(f"{what} '{text}' is not a Hub repo id but a local path; push it, then use its id: {form}")
    if text.count("/") > 1 or (namespace_required and text.count("/") != 1):
        raise HubstyleError(f"{what} '{text}' is not a Hub repo id; use {form}")
    try:
        validate_repo_id(text)
    except HFValidationError as err:
        raise HubstyleError(f"{what} '{text}' is not a valid Hub repo id: {str(err).splitlines()[0]}") from None
    return text
