"""The reference numbers a benchmark is read against: the paper's tables, REMI's own code on Beauty
(protocol.md), and the metric names in the column order of the paper's Table 2."""

from __future__ import annotations


# Test metrics of the protocol, in the column order of the paper's Table 2.
METRICS = ("recall@20", "hit_rate@20", "ndcg@20", "recall@50", "hit_rate@50", "ndcg@50")


METRIC_LABELS = {
    "recall@20": "R@20",
    "hit_rate@20": "HR@20",
    "ndcg@20": "ND@20",
    "recall@50": "R@50",
    "hit_rate@50": "HR@50",
    "ndcg@50": "ND@50",
}


NDCG_NOTE = (
    "ND (NDCG) here is computed in rank order with IDCG over the number of hits (protocol.md); the paper's "
    "ND most likely comes from REMI's code, which enumerates hits in Python set order, so ND columns are "
    "not comparable with the paper's. Compare Recall and HitRate."
)


# DMI paper, Table 2, Beauty (ND: most likely REMI's set-order NDCG, see NDCG_NOTE).
PAPER_TABLE2_BEAUTY: dict[str, dict[str, float]] = {
    "pop": dict(zip(METRICS, (0.0212, 0.0407, 0.0152, 0.0426, 0.0813, 0.0248))),
    "ydnn": dict(zip(METRICS, (0.0596, 0.1065, 0.0423, 0.0895, 0.1680, 0.0537))),
    "comirec": dict(zip(METRICS, (0.0581, 0.1046, 0.0396, 0.1043, 0.1699, 0.0501))),
    "remi": dict(zip(METRICS, (0.0876, 0.1537, 0.0591, 0.1448, 0.2369, 0.0680))),
    "dmi": dict(zip(METRICS, (0.1018, 0.1821, 0.0662, 0.1631, 0.2641, 0.0751))),
}


PAPER_TABLE2_BEAUTY_DMI_STD = dict(zip(METRICS, (0.0022, 0.0008, 0.0012, 0.0018, 0.0025, 0.0009)))


# REMI's own PyTorch code run on Beauty.txt with this protocol on the project's 2-core machines (protocol.md).
REMI_OWN_CODE_BEAUTY = {
    "recall@20": 0.0843,
    "hit_rate@20": 0.1498,
    "recall@50": 0.1440,
    "hit_rate@50": 0.2360,
}


# DMI paper, Table 3 (ablation), Book: metric@50 (the paper has no Beauty ablation).
PAPER_TABLE3_BOOK: dict[str, dict[str, float]] = {
    "dmi-diff": {"recall@50": 0.1189, "ndcg@50": 0.0657},
    "dmi-GD": {"recall@50": 0.02891, "ndcg@50": 0.0181},
    "dmi-T": {"recall@50": 0.1235, "ndcg@50": 0.0671},
    "dmi-IP": {"recall@50": 0.1352, "ndcg@50": 0.0733},
    "dmi": {"recall@50": 0.1402, "ndcg@50": 0.0751},
}


# DMI paper, Table 5, Beauty: metric@50 for K interests.
PAPER_TABLE5_BEAUTY: dict[int, dict[str, float]] = {
    2: {"recall@50": 0.1551, "ndcg@50": 0.0721},
    4: {"recall@50": 0.1631, "ndcg@50": 0.0751},
    6: {"recall@50": 0.1576, "ndcg@50": 0.0743},
    8: {"recall@50": 0.1665, "ndcg@50": 0.0764},
}


# The peer anchor quoted in the issue (not measured by this suite).
REMI_PYTORCH_EXAMPLES_PER_SECOND = 1300.0
