"""Fix 9: BasicSR's MessageLogger with an ETA that is never negative."""


def wrap_message_logger(original):
    """BasicSR's MessageLogger with an ETA that is never negative (fix 9)."""

    class MessageLogger(original):
        """BasicSR's ETA is (total_iter - iter - 1) x the mean step: at the last iteration of a run whose
        steps take a second or more it is negative and prints as "-1 day, 23:59:59"."""

        def __call__(self, log_vars):
            max_iters = self.max_iters
            self.max_iters = max(max_iters, log_vars['iter'] + 1)  # (max - iter - 1) >= 0
            try:
                return super().__call__(log_vars)
            finally:
                self.max_iters = max_iters

    return MessageLogger
