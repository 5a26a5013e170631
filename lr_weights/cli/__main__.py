import sys

from lr_weights.cli import main

sys.exit(main())
