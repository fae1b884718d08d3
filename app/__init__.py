"""The product around the resolver: the composition root, the desk, transcripts, mail, notification, auth."""
