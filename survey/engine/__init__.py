"""The survey engine: Ray actors per network, a bounded scheduler, streaming into the store."""
