# hub targets
