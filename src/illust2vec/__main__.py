import sys

from illust2vec.cli.main import main

sys.exit(main())
