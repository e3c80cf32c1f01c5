"""Controller replicas of one fleet (issue 18): every replica keeps the whole fleet state and
event store; the work that must happen once runs on the one leader elected here."""
