import sys

from sandbox.zygote._server import main

main(sys.argv[1:])
