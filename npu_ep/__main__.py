import sys

from npu_ep.cli import main

sys.exit(main())
