"""What mail servers answer after a message has left: delivery-status reports
(bounces, delay warnings), complaint reports (ARF), auto-replies and ``mailto:``
unsubscribe requests.

``parse`` turns one raw message into a ``Report`` (no database, no network);
``verp`` makes and reads the per-delivery envelope sender that lets a report be
matched to the delivery it answers; ``mailboxes`` reads a bounce mailbox
(IMAP, POP3, Maildir), one module per kind. Acting on a report (marking a
delivery, bouncing a subscriber) is the application layer's job.
"""
