"""Make the natural-text corpus the package ships (`successor_lens/data/python_docs/`): the
prose-heavy parts of the Python documentation (tutorial, HOWTOs, FAQ, What's New) from Debian's
python3-doc, cleaned of reST markup by `corpus.clean_rest`, one JSON string per paragraph, xz
compressed. The default corpus is then the same text on every machine, with or without apt.

    apt-get install python3-doc && python scripts/bundle_python_docs.py
"""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
from pathlib import Path

from successor_lens import corpus

OUT = Path(corpus.__file__).parent / "data" / "python_docs"


def main() -> None:
    files = corpus.python3_doc_files()
    texts = list(corpus.stream_texts(corpus.PYTHON3_DOC))
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "python3-doc"], capture_output=True, text=True).stdout or "unknown"
    OUT.mkdir(parents=True, exist_ok=True)
    blob = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts).encode()
    (OUT / corpus.BUNDLED_DOCS.name).write_bytes(lzma.compress(blob, preset=9 | lzma.PRESET_EXTREME))
    shutil.copyfile("/usr/share/doc/python3-doc/copyright", OUT / "LICENSE")  # Debian's copyright file: the PSF licence in full
    (OUT / "SOURCE.md").write_text(
        "# The default corpus\n\n"
        f"{len(texts):,} paragraphs ({len(blob):,} bytes as JSON lines) of the Python documentation: the "
        f"{', '.join(corpus.PYTHON_DOCS_PARTS)} parts ({len(files)} pages) of Debian's python3-doc {version}, "
        "cleaned of reST markup by `successor_lens.corpus.clean_rest`, made by `scripts/bundle_python_docs.py`.\n\n"
        "Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved. Distributed under the "
        "PSF License Agreement for Python (the documentation's licence), in LICENSE beside this file (Debian's copyright file for python3-doc).\n")


if __name__ == "__main__":
    main()
