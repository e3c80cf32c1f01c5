import sys

from agent.stub.app import main

sys.exit(main())
