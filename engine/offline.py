"""No network at run time: the process-wide switches that keep model libraries offline.

Every model heedful loads comes from an installed package or a local file. Hugging Face
libraries read these variables when they are imported, so call ``offline_environment``
before anything imports ``transformers``, ``huggingface_hub`` or
``sentence_transformers`` (``import engine`` itself imports none of them).
"""

from __future__ import annotations

import os

__all__ = ["offline_environment"]

_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
_QUIET = {
    "TOKENIZERS_PARALLELISM": "false",  # the tokenizers' own thread pool fights torch's on 2 cores
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # load-time bars are noise in a chat terminal and in piped output
}


def offline_environment(*, force: bool = True) -> None:
    """Forbid hub downloads and quiet the model libraries for this process.

    With ``force`` the offline switches override whatever the environment says (the
    bot, the tests); without it an operator's own setting wins (benchmarks, tools).
    """
    for name, value in _OFFLINE.items():
        if force:
            os.environ[name] = value
        else:
            os.environ.setdefault(name, value)
    for name, value in _QUIET.items():
        os.environ.setdefault(name, value)
