# No __init__.py in this folder: Twisted scans twisted/plugins on every
# sys.path entry.  Keep this file tiny and reactor-free (twistd --reactor).
from twisted.application.service import ServiceMaker

blueprint = ServiceMaker(
    "blueprint-net node",
    "blueprint_net._ops.tap",
    "An authenticated peer-to-peer messaging node.",
    "blueprint",
)
