import sys

from sora_tf.cli import main

sys.exit(main())
