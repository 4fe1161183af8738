"""``python -m helpers.book``: execute the notebooks and build the site (``runner.main``)."""

import sys

from helpers.book.runner import main

sys.exit(main())
