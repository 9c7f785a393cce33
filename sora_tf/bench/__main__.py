import sys

from sora_tf.bench import main

sys.exit(main())
