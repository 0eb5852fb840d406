"""What an experiment is: the Config dataclasses, value parsing, and the names of the metrics a trial records,
a trial's states."""
