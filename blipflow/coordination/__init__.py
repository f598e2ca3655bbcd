"""Who speaks: the pure, Prefect-free decisions of who is handed which blip.

The facts of each blip (thread, author kind, mentions, tags, chain depth), addressing, speaker
selection per thread (strategies and the floor), attention per agent, termination per thread, and a
replay that prices a policy on recorded history. Every function here is deterministic for its
inputs: the state is a plain value passed in and handed back, and time is a number given by the caller.
"""
