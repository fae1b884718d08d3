"""The email channel: inbound parsing, the thread store, and the channel that ties mail to conversations."""
