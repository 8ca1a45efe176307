"""Action hooks, the worker side: the flusher's feed of committed events and the `hooks` worker.

    flusher: commit -> feed.forward (XADD to the committed streams) -> XACK
    hooks worker: one task per hook, a consumer group each on the committed streams
                  (and the hook's replay stream) -> filter -> destination -> XACK -> trim

A hook only ever sees committed events. A slow or broken destination holds back
its own group only: the flusher never waits on a destination, and the other
hooks read on from their own cursors.
"""
