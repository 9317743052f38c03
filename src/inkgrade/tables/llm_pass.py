"""A vision language model as one of the two passes (``pass1=llm`` / ``pass2=llm``), as in Grabowski & Canz.

The rectified table image goes to the configured ``llm`` endpoint (any OpenAI-compatible chat API with
image input) with the number of cells and the alphabet; pass 1 also gets the expected letters (the
key), pass 2 does not. The reply is one entry per cell: a character, ``""`` for an empty cell or
``"#"`` for a crossed-out entry. No vision model ships offline, so this pass needs a configured server.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from htr.cells.data import CROSSED, EMPTY
from inkbase.errors import InputError

PROMPT_VERSION = "tables-v1"
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"cells": {"type": "array", "items": {"type": "string"}}},
                          "required": ["cells"]}


def table_messages(image: np.ndarray, n_cells: int, alphabet: str, key: list[str | None] | None) -> list[dict]:
    from grading.llm import image_part

    ok, png = cv2.imencode(".png", image)
    text = (f"The image shows one printed row of {n_cells} cells of an exam answer table. Each cell holds one "
            f"handwritten character from {alphabet!r}, or nothing. Read the cells from left to right. Reply "
            f'as JSON {{"cells": [...]}} with exactly {n_cells} strings: the character, "" for an empty cell, '
            f'"#" for an entry that is crossed out.')
    if key is not None:
        expected = ", ".join(k or "?" for k in key)
        text += (f" The expected characters are, in order: {expected}. For each cell, check whether the expected "
                 "character is written there; if it is not, give the character that is written.")
    return [{"role": "user", "content": [{"type": "text", "text": text}, image_part(png.tobytes())]}]


class LLMTablePass:
    """Reads whole tables through an :class:`grading.llm.LLMClient`."""

    def __init__(self, client: Any):
        self.client = client

    def read(self, image: np.ndarray, n_cells: int, alphabet: str, key: list[str | None] | None,
             source: str) -> list[str]:
        reply = self.client.chat(table_messages(image, n_cells, alphabet, key), SCHEMA, "table_cells")
        if not reply.ok:
            raise InputError(source, "llm", f"no reply from the language model ({reply.error})")
        cells = [str(c).strip().upper() for c in reply.data["cells"]]
        if len(cells) != n_cells:  # a reply of the wrong length cannot be aligned: every cell goes to review
            return ["?"] * n_cells
        return [EMPTY if not c else CROSSED if c == "#" else c[0] for c in cells]
