"""``python -m brats_ad`` is the same as the ``brats-ad`` console script."""

from brats_ad.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
