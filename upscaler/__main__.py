import sys

from upscaler.cli import main

sys.exit(main())
