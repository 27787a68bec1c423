"""The life cycle's steps: what ingress and workers do with a borrowing request.

One module per workflow; `registry.build_registry` registers their job kinds for the worker.
"""
