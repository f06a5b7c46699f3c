"""``python -m flexattn_mlir``: the ``flexattn`` command (:mod:`.tools.cli`)."""

from .tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
