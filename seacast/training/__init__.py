"""Training: one shared loop (:mod:`.loop`) and update rules (:mod:`.rules`) that turn a batch into an update."""
