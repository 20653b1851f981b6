# course targets
