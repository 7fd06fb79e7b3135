import sys

from scriptpool.sandbox.zygote._server import main

main(sys.argv[1:])
