"""Running a study: the plan, the order, the sweep loop that claims and records trials, and the executors
(local processes, Ray) that train them."""
