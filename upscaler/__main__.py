import sys

from upscaler.launch import main

sys.exit(main())
