"""The application layer: each use case of the product lives here once.

The CLI, the public web pages, the operator's console, the Celery worker and the
scheduler parse their input, call one function of this package, and present the
result. Stages below (store, ingest, ranking, render, transports) never import it.

- ``editions``: open an edition (the one place), plan it, deliver it (or a worker's
  share of it), send (plan + deliver), retry failures, an edition's status.
- ``sending``: ``newsletter send``'s policy (transport, compliance gate, the
  operator's yes, delivered here or through the queue).
- ``emails``: one subscriber's email for an edition (view in browser), and what a
  reader was sent (archive, Atom feed).
- ``preview``: what ``send`` would send, to files (``newsletter preview``), and the
  console's one email with why each paper was picked.
- ``subscribers``: sign up, confirm, change, unsubscribe, erase, bounce.
- ``votes``: record a reader's vote on a paper.
- ``ranking``: what the next edition would pick, what votes taught.
- ``ingest``: ingest sources (fetch, parse, store), list them, a dry run of one.
"""
