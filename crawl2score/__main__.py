import sys

from crawl2score.cli import main

sys.exit(main())
