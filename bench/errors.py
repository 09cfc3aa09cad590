class UnknownName(ValueError):
    """A suite/task/method/budget name that is not registered; the message lists the valid ones."""
