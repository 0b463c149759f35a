"""The recipe's check set (recipe.py step 0), small on its own so that app.evaluate(),
app.refit() and app.calibrate() can split the ring without importing the whole recipe."""

HOLDOUT = 4  # 1 in 4 of each class's windows (the last ones) is the check set


def gap_windows(window, step):
    """Windows cut every `step` samples overlap the next ceil(window / step) - 1 windows."""
    if step <= 0 or step >= window:
        return 0
    return (window + step - 1) // step - 1


def split(labels, holdout=HOLDOUT, gap=1):
    """labels of the collected windows, oldest first -> (train, check): index lists, ascending.

    Per class with n windows: the last n // holdout are the check set, the `gap` windows before
    them are dropped, the rest train. A class with fewer than `holdout` windows has no check
    windows (all train). holdout <= 0: no check set."""
    by = {}
    for i, k in enumerate(labels):
        if k in by:
            by[k].append(i)
        else:
            by[k] = [i]
    train, check = [], []
    for k in by:
        idx = by[k]
        c = len(idx) // holdout if holdout > 0 else 0
        if c == 0:
            train.extend(idx)
            continue
        check.extend(idx[len(idx) - c:])
        train.extend(idx[:max(0, len(idx) - c - gap)])
    train.sort()
    check.sort()
    return train, check
