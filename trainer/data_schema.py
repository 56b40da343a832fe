"""The data's names, shared by every stage: log columns, example feature keys, split names, the padding id.

One place for constants (as the TFX taxi template's ``features.py``): the data tooling, the trainer, the
pipeline and the exported model all read their column and feature names from here.
"""

# Columns of the canonical raw input, an interaction log CSV with this exact header.
USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
LOG_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP)

# Features of a per-user sequence example (one tf.Example per user, lists in time order).
ITEM_IDS = "item_ids"
TIMESTAMPS = "timestamps"

# User splits, 8:1:1 by user (disjoint users), as the ComiRec/REMI/DMI protocol.
TRAIN = "train"
EVAL = "eval"
TEST = "test"
SPLIT_RATIOS = {TRAIN: 8, EVAL: 1, TEST: 1}

# Item index 0 is the padding id; real items are 1..N by descending frequency.
PADDING_INDEX = 0
