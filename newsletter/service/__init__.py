"""The application layer: each use case of the product lives here once.

The CLI, the public web pages, the operator's console, the Celery worker and the
scheduler parse their input, call one function of this package, and present the
result. Stages below (store, ingest, ranking, render, transports) never import it.

- ``editions``: plan an edition, deliver it (or a batch of it), retry failures,
  render one subscriber's email for an edition (send, preview, view in browser).
- ``subscribers``: sign up, confirm, change, unsubscribe, erase, bounce.
- ``votes``: record a reader's vote on a paper.
- ``ranking``: what the next edition would pick, what votes taught.
- ``ingest``: ingest sources (fetch, parse, store), list them, a dry run of one.
"""
