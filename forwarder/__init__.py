"""The action-hook forwarder: delivers committed events to each hook's destination.

    flusher (its own package): commit -> copy to the committed streams -> XACK
    forwarder: one runner per hook, a consumer group each on the committed streams
               (and the hook's replay stream) -> filter -> destination -> XACK -> trim

A hook only ever sees committed events. A slow or broken destination holds back
its own group only: the flusher never waits on a destination, and the other
hooks read on from their own cursors. Nothing here imports the flusher or the edge.
"""
